"""Tag a whole music library: every song under the given folders, one row per file in a results database.

    python -m ast_dora.tag ~/Music --model runs/vit_hybrid --output music.db
    python -m ast_dora.tag ~/Music --model runs/vit_hybrid --model runs/ast_dora --ensemble --output music.db
    python -m ast_dora.tag ~/Music --model runs/ast_dora --output music.db --write_tags --dry_run  # what would change
    python -m ast_dora.tag ~/Music --model runs/ast_dora --output music.db --write_tags            # genre into the files
    python -m ast_dora.tag --undo music.db.tags.jsonl                                              # put the old tags back
    python -m ast_dora.tag /data/catalogue --model runs/ast_dora --ray auto --output results_parquet/  # a Ray cluster

Folders are walked at any depth, symlinks followed (loops and unreadable folders reported, never fatal); a file is
a song when PyAV can read audio from it (not by its extension alone). RESULTS is SQLite (see docs/tagging.md for
why): path, size, mtime, duration, genre, confidence, probabilities, is_music, the model's id and weights hash, the
backend, the seconds taken, or the error. A rerun skips files whose path, size, mtime and model are unchanged,
analyses new and changed ones and marks vanished ones; a run killed at any moment (even `kill -9`) loses at most
the songs in flight. At the end: counts per genre, not music and errors, and a bar chart of the genre counts
(`--chart`, default RESULTS's name + `_genres.png`). The exit status is 1 when some songs failed.

Speed: decoding and features run in `--workers` processes while the model runs in batches across songs
(docs/tagging.md has the figures). `--write_tags` writes the genre into each music file's own tag (ID3 TCON, Vorbis
GENRE, MP4 \xa9gen) through a temporary copy and a rename, never touching the audio, and logs the old values for
`--undo`. `--ray auto|ADDRESS` runs the same job as a Ray Data pipeline and writes Parquet (`pip install -e
".[cluster]"`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from .backends import BACKEND_CHOICES
from .music_detection import DEFAULT_MIN_MUSIC_PROBABILITY
from .tagging.loading import default_chart, load_models

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ast_dora.tag",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "library", nargs="*", metavar="LIBRARY", help="Folders (walked at any depth) or files."
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="DIR_OR_HUB_ID",
        help="A trained model (output_dir of finetune/run.py or a Hub id); repeat it with --ensemble.",
    )
    parser.add_argument(
        "--ensemble", action="store_true", help="One answer from all the --model's (weighted mean)."
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=None,
        metavar="W",
        help="With --ensemble: one weight per --model (default: equal).",
    )
    parser.add_argument(
        "--output",
        metavar="RESULTS",
        help="The results database (SQLite; created or updated). With --ray: a folder of Parquet.",
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="What runs the model (default auto: the fastest export the model has, else torch).",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Decoding processes (default: cores - 1, at least 1; 0 decodes in the main process).",
    )
    parser.add_argument(
        "--batch_size", type=int, default=None, help="Windows per model batch (model's default)."
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="Threads of the model runtime (default: cores)."
    )
    parser.add_argument(
        "--max_windows",
        type=int,
        default=None,
        help="Analyse at most this many windows per song, evenly spread (default: all).",
    )
    parser.add_argument(
        "--min_music_probability",
        type=float,
        default=DEFAULT_MIN_MUSIC_PROBABILITY,
        help=f'A song is music when AudioSet\'s "Music" reaches this (default {DEFAULT_MIN_MUSIC_PROBABILITY}).',
    )
    parser.add_argument(
        "--retry_errors", action="store_true", help="Analyse again unchanged files that failed before."
    )
    parser.add_argument(
        "--chart",
        default=None,
        metavar="OUT.png",
        help="The genre bar chart (default: RESULTS's name + _genres.png; 'none' for no chart).",
    )
    parser.add_argument(
        "--export_parquet",
        default=None,
        metavar="OUT.parquet",
        help="Also write this model's rows as one Parquet file (for analytics).",
    )
    parser.add_argument(
        "--write_tags",
        action="store_true",
        help="Write each music song's genre into its own tag (mp3, ogg, opus, flac, m4a).",
    )
    parser.add_argument(
        "--dry_run", action="store_true", help="With --write_tags: print what would change, write nothing."
    )
    parser.add_argument(
        "--tag_log",
        default=None,
        metavar="LOG",
        help="With --write_tags: the undo log (default RESULTS + .tags.jsonl), appended to.",
    )
    parser.add_argument(
        "--undo", default=None, metavar="LOG", help="Restore the tags a --write_tags run changed."
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="auto|ADDRESS",
        help="Run on Ray (a cluster started with `ray start --head`; auto finds it, or a local one).",
    )
    parser.add_argument(
        "--no_bf16", action="store_true", help="Keep fp32 even where the CPU has native bf16."
    )
    parser.add_argument("--quiet", action="store_true", help="No progress bar.")
    return parser


def plan_work(files, known: dict, retry_errors: bool):
    """(files to analyse, unchanged paths, paths to mark present again): a file is unchanged when its row has the
    same size and mtime (and did not fail, with `retry_errors`)."""
    todo, unchanged, back = [], [], []
    for file in files:
        row = known.get(file.path)
        if (
            row is not None
            and row[0] == file.size
            and row[1] == file.mtime
            and not (retry_errors and row[2] == "error")
        ):
            unchanged.append(file.path)
            if row[3] is not None:
                back.append(file.path)
        else:
            todo.append(file)
    return todo, unchanged, back


def _validate(parser, args) -> None:
    if args.undo:
        if args.library or args.model:
            parser.error("--undo LOG restores tags on its own: give no LIBRARY or --model with it.")
        return
    if not args.library:
        parser.error("give at least one LIBRARY folder (or file).")
    if not args.model:
        parser.error("give the model: --model DIR_OR_HUB_ID.")
    if not args.output:
        parser.error("give the results file: --output RESULTS (e.g. music.db).")
    if len(args.model) > 1 and not args.ensemble:
        parser.error("several --model's answer together with --ensemble; without it, give one --model.")
    if args.ensemble and len(args.model) < 2:
        parser.error("--ensemble needs at least two --model's.")
    if args.weights is not None and (not args.ensemble or len(args.weights) != len(args.model)):
        parser.error("--weights takes one weight per --model with --ensemble.")
    if args.dry_run and not args.write_tags:
        parser.error("--dry_run goes with --write_tags (it prints the tags that would change).")
    if args.workers is not None and args.workers < 0:
        parser.error(f"--workers must be 0 or more, got {args.workers}")
    if args.max_windows is not None and args.max_windows < 1:
        parser.error(f"--max_windows must be at least 1, got {args.max_windows}")
    if not 0.0 <= args.min_music_probability <= 1.0:
        parser.error(f"--min_music_probability must be between 0 and 1, got {args.min_music_probability}")
    if args.ray and args.write_tags:
        parser.error(
            "--write_tags runs on one machine (the files are local): tag without --ray first, or write "
            "tags from a local run."
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .errors import MissingComponentError

    try:
        if args.undo:
            from .tagging.file_tags import undo_log

            return undo_log(args.undo)
        if args.ray:
            from .tagging.ray_pipeline import main_ray

            return main_ray(args)
        return run_local(args)
    except MissingComponentError as error:  # mutagen or ray not installed: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


def run_local(args) -> int:
    from .tagging.engine import FeaturePlan, SongBatcher, tag_files
    from .tagging.report import format_summary, save_genre_chart, summarise
    from .tagging.store import ResultsError, ResultsStore, export_parquet
    from .tagging.walk import LibraryFile, under_roots, walk_library

    for root in args.library:
        if not os.path.exists(root):
            print(f"error: {root}: no such folder or file.", file=sys.stderr)
            return 2
    try:
        store = ResultsStore(args.output)
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        classifiers, ensemble, info = load_models(args)
    except Exception as error:  # a missing folder, an unreachable Hub id, not a model of this project
        print(
            f"error: could not load the model(s) {args.model}: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return 2

    output = os.path.realpath(args.output)
    exclude = [output, output + "-wal", output + "-shm", output + "-journal"]
    files, problems = [], []
    for item in walk_library(args.library, exclude=exclude):
        (files if isinstance(item, LibraryFile) else problems).append(item)
    for problem in problems:
        print(f"warning: {problem.path}: {problem.reason}", file=sys.stderr)
    known = store.known(info.model_key)
    todo, unchanged, back = plan_work(files, known, args.retry_errors)
    store.clear_vanished(back, info.model_key)
    present = {f.path for f in files}
    vanished = [
        path
        for path, row in known.items()
        if path not in present and row[3] is None and under_roots(path, args.library)
    ]
    store.set_vanished(vanished, info.model_key)
    print(
        f"{len(files)} files under {', '.join(args.library)}: {len(todo)} to analyse, {len(unchanged)} unchanged, "
        f"{len(vanished)} vanished; {len(problems)} problems while walking. Model: {info.model_id} "
        f"({info.backend})",
        file=sys.stderr,
    )

    plans = [FeaturePlan.of(c) for c in classifiers]
    batcher = SongBatcher(classifiers, info, ensemble=ensemble, batch_size=args.batch_size)
    bar = None
    if not args.quiet and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="song", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    start, failed, analysed = time.perf_counter(), 0, 0
    try:
        for rows in tag_files(todo, batcher, plans, workers=args.workers):
            if not rows:
                continue
            store.add(rows)  # one transaction per model batch: a kill -9 loses only the songs in flight
            analysed += len(rows)
            failed += sum(row["status"] == "error" for row in rows)
            if bar is not None:
                bar.update(len(rows))
                bar.set_postfix_str(f"{failed} errors", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start

    rows = [row for row in store.rows(info.model_key) if under_roots(row["path"], args.library)]
    summary = summarise(rows)
    print(format_summary(summary))
    if analysed:
        print(
            f"this run: {analysed} files in {elapsed:.1f} s ({analysed / elapsed:.2f} songs/s), {failed} errors; "
            f"{len(unchanged)} unchanged skipped, {len(vanished)} vanished"
        )
    for row in rows:
        if row["status"] == "error":
            print(f"error: {row['path']}: {row['error']}", file=sys.stderr)
    if args.chart != "none":
        chart = save_genre_chart(
            summary,
            args.chart or default_chart(args.output),
            title=f"{summary['songs']} songs by genre ({Path(args.output).name})",
        )
        print(f"chart written to {chart}", file=sys.stderr)
    if args.export_parquet:
        print(f"parquet written to {export_parquet(rows, args.export_parquet)}", file=sys.stderr)
    status = 1 if summary["errors"] else 0
    if args.write_tags:
        from .tagging.file_tags import write_genre_tags

        log = args.tag_log or f"{args.output}.tags.jsonl"
        status = max(status, write_genre_tags(rows, log, dry_run=args.dry_run, store=store))
    store.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
