"""Classify songs from the command line with a trained model (either kind; local folder or Hub id).

    python -m ast_dora.predict song.mp3 other.flac --model runs/vit_hybrid
    python -m ast_dora.predict song.mp3 --model runs/ast_dora --json > song.json
    python -m ast_dora.predict song.mp3 --model runs/vit_hybrid --plot song.png
    python -m ast_dora.predict song.mp3 --model runs/ast_dora --backend onnx   # after `python -m ast_dora.export onnx`
    python -m ast_dora.predict song.mp3 --model runs/vit_hybrid --model runs/ast_dora --ensemble  # both in one answer

Prints a table (genre, confidence, majority vote, top genres) or, with `--json`, a JSON list with one object
per song: `file`, `genre`, `confidence`, `probabilities` (genre -> probability, mean over windows), `vote`
(majority-vote genre), `duration`, `windows_analysed` and `windows_total` (`--max_windows` analyses at most that
many, evenly spread), `precision` (what the model computed in, read back from its backend: `fp32`, `bf16`,
`int8/fp32`, `int8/bf16`; `--no_bf16` gives fp32 on every backend) and `segments` (`{start, end, probabilities}`
per window), and the music check of an AST-DoRA model:
`music_probability` (AudioSet's "Music" for the song), `is_music` (`music_probability` >=
`--min_music_probability`) and `audioset_top` (`[{"label", "score"}]`, the song's top AudioSet classes); `null` for
a model without it (the ViT-hybrid); `tags_top` (a musicnn model: its pretrained network's top tags for the song,
e.g. "rock 0.61, guitar 0.40, 80s 0.22"; `null` for the others). When `is_music` is false the table says "not music" and what it sounds like
instead of the genre (the JSON keeps `genre`). With `--ensemble`, one object per song for all the `--model`s:
`probabilities` is the weighted mean of theirs (`--weights`, equal by default), `models` names them, `per_model`
holds each one's answer, and `segments` are cells of a common time grid. A file that cannot
be analysed is reported (on stderr, and as `{"file", "error"}` in the JSON) and the others still run; the exit
status is 1 if any failed. Installed as `ast-dora-predict` too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .backends import BACKEND_CHOICES
from .inference import GenreClassifier, InvalidAudioError, _format_duration
from .music_detection import DEFAULT_MIN_MUSIC_PROBABILITY

logger = logging.getLogger(__name__)

# A progress bar is worth drawing from this many windows (~1 minute of audio for the ViT-hybrid) on.
PROGRESS_MIN_WINDOWS = 30


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ast_dora.predict",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("songs", nargs="+", metavar="SONG", help="Audio files (anything FFmpeg decodes).")
    parser.add_argument(
        "--model",
        required=True,
        action="append",
        metavar="DIR_OR_HUB_ID",
        help="A trained model: output_dir of finetune/run.py (either kind) or a Hub id; repeat it "
        "with --ensemble for one answer from several.",
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="One answer from all the --model's: the weighted mean of their song probabilities.",
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=None,
        metavar="W",
        help="With --ensemble: one weight per --model, in order (default: equal).",
    )
    parser.add_argument(
        "--min_music_probability",
        type=float,
        default=DEFAULT_MIN_MUSIC_PROBABILITY,
        help='A song is music (`is_music`) when AudioSet\'s "Music" probability reaches this '
        f'(default {DEFAULT_MIN_MUSIC_PROBABILITY}; docs/serving.md, "Music check").',
    )
    parser.add_argument("--json", action="store_true", help="Print JSON (a list, one object per song).")
    parser.add_argument(
        "--plot",
        default=None,
        metavar="OUT.png",
        help="Save the probability bars and the timeline; with several songs, OUT_<song>.png each.",
    )
    parser.add_argument(
        "--top_k", type=int, default=3, help="Genres listed per song in the table (default 3)."
    )
    parser.add_argument(
        "--no_segments", action="store_true", help="Leave the per-window `segments` out of the JSON."
    )
    parser.add_argument(
        "--batch_size", type=int, default=None, help="Windows per forward pass (model's default)."
    )
    parser.add_argument("--window_seconds", type=float, default=None, help="Window length (model's default).")
    parser.add_argument(
        "--hop_seconds",
        type=float,
        default=None,
        help="Seconds between window starts (default: the window length, back to back); a smaller "
        "hop overlaps windows for a smoother timeline, at proportionally more work.",
    )
    parser.add_argument(
        "--max_windows",
        type=int,
        default=None,
        help="Analyse at most this many windows per song, evenly spread over it (default: all); the "
        "JSON reports `windows_analysed` of `windows_total`.",
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="torch",
        help="What runs the model: torch (default); onnx: ONNX Runtime on the model's onnx/ export "
        "(int8 when present), written by `python -m ast_dora.export onnx MODEL_DIR --quantize int8`; "
        "openvino: OpenVINO on its openvino/ export (`python -m ast_dora.export openvino MODEL_DIR "
        "--quantize int8`); auto: the fastest export the model has (openvino int8, onnx int8, ...), "
        "else torch.",
    )
    parser.add_argument(
        "--no_bf16",
        action="store_true",
        help="Compute in fp32 on every backend (default: bf16 where it is measured faster than fp32, `ast_dora.hardware`).",
    )
    parser.add_argument(
        "--device", default=None, help="cpu or cuda (default: cuda when available; onnx: cpu)."
    )
    parser.add_argument("--revision", default=None, help="Hub revision of --model.")
    parser.add_argument("--token", default=None, help="Hub token for a private --model.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    return parser


def plot_path(plot: str, song: str, many: bool) -> Path:
    path = Path(plot)
    return path.with_name(f"{path.stem}_{Path(song).stem}{path.suffix or '.png'}") if many else path


def _table_line(row: dict, top_k: int) -> tuple[str, ...]:
    music = "-" if row.get("music_probability") is None else f"{row['music_probability']:.0%}"
    if row.get("is_music") is False:
        # Not music: the genre is no answer; say what it sounds like (AudioSet's top class other than Music).
        like = next(
            (item for item in row["audioset_top"] if item["label"] != "Music"), row["audioset_top"][0]
        )
        return (
            row["file"],
            _format_duration(row["duration"]),
            music,
            "not music",
            "-",
            "-",
            f"sounds like {like['label']} {like['score']:.2f}",
        )
    top = ", ".join(
        f"{genre} {p:.0%}"
        for genre, p in sorted(row["probabilities"].items(), key=lambda item: -item[1])[:top_k]
    )
    return (
        row["file"],
        _format_duration(row["duration"]),
        music,
        row["genre"],
        f"{row['confidence']:.1%}",
        row["vote"],
        top,
    )


def format_table(rows: list[dict], top_k: int) -> str:
    header = ("file", "duration", "music", "genre", "confidence", "vote", f"top {top_k}")
    lines = [_table_line(row, top_k) for row in rows if "error" not in row]
    lines += [(row["file"], "-", "-", "ERROR", "-", "-", row["error"]) for row in rows if "error" in row]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in [header, *lines]
    )


def _progress_bar(song: str, quiet: bool):
    """A `progress(done, total)` callback drawing a tqdm bar on stderr once a song turns out to be long."""
    if quiet:
        return None, lambda: None
    state = {}

    def progress(done: int, total: int) -> None:
        if total < PROGRESS_MIN_WINDOWS:
            return
        if "bar" not in state:
            from tqdm.auto import tqdm

            state["bar"] = tqdm(
                total=total, desc=Path(song).name, unit="window", leave=False, file=sys.stderr
            )
        state["bar"].update(done - state["bar"].n)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return progress, close


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_windows is not None and args.max_windows < 1:
        parser.error(f"--max_windows must be at least 1, got {args.max_windows}")
    if len(args.model) > 1 and not args.ensemble:
        parser.error("several --model's answer together with --ensemble; without it, give one --model.")
    if args.ensemble and len(args.model) < 2:
        parser.error("--ensemble needs at least two --model's.")
    if args.weights is not None and (not args.ensemble or len(args.weights) != len(args.model)):
        parser.error(
            f"--weights takes one weight per --model with --ensemble ({len(args.model)} models, "
            f"{len(args.weights)} weights)."
        )
    if not 0.0 <= args.min_music_probability <= 1.0:
        parser.error(f"--min_music_probability must be between 0 and 1, got {args.min_music_probability}")
    folders = [song for song in args.songs if Path(song).is_dir()]
    if folders:  # before loading any model: a folder is a library, which `ast_dora.tag` walks
        for folder in folders:
            print(
                f"error: {folder} is a folder, not a song. To tag every song under it (recursively, resumable, "
                f"with a results database) run: python -m ast_dora.tag {folder} --model "
                f"{' --model '.join(args.model)} --output results.db",
                file=sys.stderr,
            )
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    hub_kwargs = {key: value for key, value in (("revision", args.revision), ("token", args.token)) if value}
    classifiers = []
    for model in args.model:
        try:
            classifiers.append(
                GenreClassifier.from_pretrained(
                    model,
                    hub_kwargs=hub_kwargs,
                    backend=args.backend,
                    batch_size=args.batch_size,
                    window_seconds=args.window_seconds,
                    hop_seconds=args.hop_seconds,
                    bf16=False if args.no_bf16 else None,
                    device=args.device,
                    max_windows=args.max_windows,
                    min_music_probability=args.min_music_probability,
                )
            )
        except Exception as error:  # a missing folder, an unreachable Hub id, not a model of this project
            print(
                f"error: could not load the model {model!r}: {type(error).__name__}: {error}", file=sys.stderr
            )
            return 2
    try:
        classifier = (
            GenreClassifier.ensemble(classifiers, weights=args.weights) if args.ensemble else classifiers[0]
        )
    except ValueError as error:  # models of different genres
        print(f"error: {error}", file=sys.stderr)
        return 2

    rows, failed = [], 0
    for song in args.songs:
        progress, close = _progress_bar(song, args.quiet)
        try:
            analysis = classifier.analyse(song, progress=progress)
        except InvalidAudioError as error:
            failed += 1
            rows.append({"file": song, "error": str(error)})
            print(f"error: {song}: {error}", file=sys.stderr)
            continue
        except Exception as error:  # keep going with the other songs; the exit status tells
            failed += 1
            rows.append({"file": song, "error": f"{type(error).__name__}: {error}"})
            logger.exception("%s: analysis failed", song)
            continue
        finally:
            close()
        row = analysis.to_dict(segments=not args.no_segments)
        row["file"] = song
        rows.append(row)
        if args.plot:
            from .plots import save_analysis_plot

            path = save_analysis_plot(
                analysis, plot_path(args.plot, song, len(args.songs) > 1), title=Path(song).name
            )
            print(f"plot written to {path}", file=sys.stderr)

    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, args.top_k))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
