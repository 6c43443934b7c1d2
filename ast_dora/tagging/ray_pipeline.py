"""The library job on Ray (`python -m ast_dora.tag LIBRARY --model M --ray auto|ADDRESS --output FOLDER`): a Ray
Data pipeline with the same rows as the one-machine run.

    file list (walked by the driver) -> decode + features (`prepare_song`, CPU tasks, one CPU each)
      -> model (`ModelActor` via `map_batches`: the classifiers and a `SongBatcher`, batches across songs)
      -> Parquet (`write_parquet`, one file per block, the columns of the SQLite table)

The same functions as the local engine run at each stage (`ast_dora.tagging.engine`), so a row here equals the
local row of the same file (`tests/test_tag_ray.py` checks it on a local Ray instance). On a cluster every node
must see the library and the model at the same paths (a shared file system or the same mount), and have this
project installed (`pip install -e ".[cluster]"`). `ray` is imported only here: the rest of the project runs
without it.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from pathlib import Path

from ..errors import MissingComponentError
from .engine import FeaturePlan, LibraryFile, SongBatcher, prepare_song

logger = logging.getLogger(__name__)

RAY_MISSING = 'Ray is not installed (it runs --ray): pip install -e ".[cluster]" (or pip install "ray[data]")'
# Songs per model-actor call: enough windows for several full model batches.
SONGS_PER_BATCH = 8


def import_ray():
    try:
        import ray
    except ModuleNotFoundError:
        raise MissingComponentError(RAY_MISSING) from None
    return ray


def connect(address: str, **init_kwargs):
    """`ray.init` on the cluster at `address`; `auto`: the cluster this machine belongs to (`ray start --head`), or a
    new local instance when there is none. Does nothing when Ray is already initialised (tests, notebooks)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address == "auto":
        try:
            ray.init(address="auto", **init_kwargs)
        except ConnectionError:
            logger.warning(
                "no running Ray cluster found; starting a local one (ray start --head makes a cluster)"
            )
            ray.init(**init_kwargs)
    else:
        ray.init(address=address, **init_kwargs)
    return ray


def _decode(row: dict, plans: list[FeaturePlan]) -> dict:
    from .engine import init_worker

    init_worker(plans, watch_parent=False)  # one BLAS thread in this task, as in a local worker
    song = prepare_song(LibraryFile(row["path"], int(row["size"]), float(row["mtime"])), plans)
    return {"path": row["path"], "prepared": pickle.dumps(song, protocol=pickle.HIGHEST_PROTOCOL)}


class ModelActor:
    """Loads the model(s) once per actor; each call runs a batch of prepared songs through a `SongBatcher`."""

    def __init__(self, specs: list[str], options: dict, ensemble_weights, info):
        from ..inference import GenreClassifier

        self.classifiers = [GenreClassifier.from_pretrained(spec, **options) for spec in specs]
        ensemble = (
            GenreClassifier.ensemble(self.classifiers, weights=ensemble_weights, names=specs)
            if ensemble_weights is not None
            else None
        )
        self.batcher = SongBatcher(
            self.classifiers, info, ensemble=ensemble, batch_size=options.get("batch_size")
        )

    def __call__(self, batch):
        import pyarrow as pa

        from .store import parquet_schema

        rows = []
        for blob in batch["prepared"]:
            rows += self.batcher.add(pickle.loads(blob))
        rows += self.batcher.flush()
        return pa.Table.from_pylist([_parquet_row(row) for row in rows], schema=parquet_schema())


def _parquet_row(row: dict) -> dict:
    import json

    row = dict(row)
    if isinstance(row.get("probabilities"), dict):
        row["probabilities"] = json.dumps(row["probabilities"])
    return row


def tag_on_ray(
    files: list[LibraryFile],
    specs: list[str],
    options: dict,
    ensemble_weights,
    info,
    plans: list[FeaturePlan],
    output: str | os.PathLike,
    actors: int | None = None,
    model_cpus: float = 1.0,
) -> Path:
    """Run the pipeline over `files` and write Parquet into the folder `output`; returns it."""
    ray = import_ray()
    items = [{"path": f.path, "size": f.size, "mtime": f.mtime} for f in files]
    if not items:
        raise ValueError("no files to tag")
    resources = ray.cluster_resources()
    actors = actors or max(1, int(resources.get("CPU", 1) // max(4.0, 4 * model_cpus)))
    dataset = ray.data.from_items(
        items, override_num_blocks=max(1, min(len(items), 4 * int(resources.get("CPU", 1))))
    )
    dataset = dataset.map(_decode, fn_kwargs={"plans": plans}, num_cpus=1)
    dataset = dataset.map_batches(
        ModelActor,
        fn_constructor_kwargs={
            "specs": specs,
            "options": options,
            "ensemble_weights": ensemble_weights,
            "info": info,
        },
        batch_size=SONGS_PER_BATCH,
        concurrency=actors,
        num_cpus=model_cpus,
        batch_format="pyarrow",
    )
    output = Path(output)
    dataset.write_parquet(str(output))
    return output


def read_rows(folder: str | os.PathLike) -> list[dict]:
    """The rows of a Ray run's Parquet folder, as `ResultsStore.rows` gives them (probabilities parsed)."""
    import pyarrow.parquet as pq

    from .store import parse_row

    return sorted((parse_row(row) for row in pq.read_table(str(folder)).to_pylist()), key=lambda r: r["path"])


def main_ray(args) -> int:
    """`python -m ast_dora.tag ... --ray`: walk, run the pipeline, print the summary, draw the chart."""
    from .loading import default_chart, load_models
    from .report import format_summary, save_genre_chart, summarise
    from .walk import LibraryFile as File
    from .walk import walk_library

    try:
        connect(args.ray)
    except MissingComponentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output)
    if output.exists() and any(output.iterdir()):
        print(
            f"error: {output} is not empty: give a new folder for the Parquet files of a Ray run.",
            file=sys.stderr,
        )
        return 2
    classifiers, ensemble, info = load_models(args)
    files = []
    for item in walk_library(args.library):
        if isinstance(item, File):
            files.append(item)
        else:
            print(f"warning: {item.path}: {item.reason}", file=sys.stderr)
    options = {
        "backend": args.backend,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "bf16": False if args.no_bf16 else None,
        "max_windows": args.max_windows,
        "min_music_probability": args.min_music_probability,
    }
    weights = None if ensemble is None else [float(w) for w in ensemble.weights]
    print(f"{len(files)} files; Ray resources {import_ray().cluster_resources()}", file=sys.stderr)
    tag_on_ray(
        files, list(args.model), options, weights, info, [FeaturePlan.of(c) for c in classifiers], output
    )
    rows = read_rows(output)
    summary = summarise(rows)
    print(format_summary(summary))
    print(f"Parquet written to {output}/", file=sys.stderr)
    if args.chart != "none":
        chart = save_genre_chart(summary, args.chart or default_chart(str(output).rstrip("/") + ".parquet"))
        print(f"chart written to {chart}", file=sys.stderr)
    return 1 if summary["errors"] else 0


__all__ = ["ModelActor", "connect", "main_ray", "read_rows", "tag_on_ray"]
