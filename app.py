"""Gradio demo: upload or record a song, get its genre, the top genres and the genre over time.

    python app.py --model runs/vit_hybrid --model runs/ast_dora [--port 7860]
    GENRE_MODELS=user/genre-vit-hybrid,user/genre-ast-dora python app.py        # a Space sets this variable

Models are output folders of `finetune/run.py` (either kind) or Hub ids; the picker lists them in the order given.
With two or more models it also offers "both" (`BOTH`, the default then): one answer from all of them, the weighted
mean of their song probabilities (`GenreClassifier.ensemble`, equal weights). With one model, that model is the
default.

Music check: when an AST-DoRA model (which carries the AudioSet classifier it was fine-tuned from) is served, every
upload is checked with it, whichever model the visitor picked (for another model, on at most
`MUSIC_CHECK_MAX_WINDOWS` windows spread over the song); a song that is not music is shown as "not music" with
what it sounds like (AudioSet's top classes) instead of a genre; the JSON keeps `genre`. The analysis is served to API clients as `/predict` (audio file first, the model an
optional second input), e.g. with `gradio_client`:

    Client("http://127.0.0.1:7860").predict(handle_file("song.mp3"), api_name="/predict")

Results stream: the genre, the summary and the timeline appear after the first batch of windows and are updated
as the rest arrive (the summary counts the windows done); API clients get the complete result.

Settings (flag or environment variable): `--backend` / `GENRE_BACKEND` (`torch`; `onnx` for ONNX Runtime on the
model's `onnx/` export, int8 when there is one: `python -m ast_dora.export onnx OUTPUT_DIR --quantize int8`;
`openvino` for OpenVINO on its `openvino/` export: `python -m ast_dora.export openvino OUTPUT_DIR --quantize int8`;
default `auto`: the fastest export each model has, openvino int8 then onnx int8, torch for one without, see docs/serving.md
"OpenVINO backend"; with exported models only, the app runs without torch installed), `--max_seconds` /
`GENRE_MAX_SECONDS` (longest song accepted, default 600), `--max_windows` / `GENRE_MAX_WINDOWS` (analyse at most
that many windows of a song, evenly spread over it; default 0: all), `--min_music_probability` /
`GENRE_MIN_MUSIC_PROBABILITY` (default 0.5), `--max_file_size` / `GENRE_MAX_FILE_SIZE` (upload limit, default 50mb), `--examples_dir` /
`GENRE_EXAMPLES_DIR` (where example clips are generated), `--no_bf16` / `GENRE_BF16=0` (fp32 on every backend),
`GENRE_CONCURRENCY` (analyses served at once; default one per two CPUs).

On a ZeroGPU Space (Hugging Face sets `SPACES_ZERO_GPU`) the torch models are placed on `cuda` at startup and each
analysis runs inside `spaces.GPU`, which attaches a GPU for its duration; elsewhere `spaces` is never imported.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np

from ast_dora.backends import BACKEND_CHOICES, BackendError, get_backend
from ast_dora.backends import DEFAULT_BACKEND as TORCH_BACKEND
from ast_dora.inference import GenreClassifier, InvalidAudioError
from ast_dora.inference import _format_duration as format_duration
from ast_dora.music_detection import DEFAULT_MIN_MUSIC_PROBABILITY
from ast_dora.plots import plot_probability_timeline

logger = logging.getLogger("app")

REPO_ROOT = Path(__file__).resolve().parent
# Real recordings kept beside the repository in the team's workplace; generated clips stand in elsewhere.
SHARED_AUDIO = REPO_ROOT.parent / "shared" / "real-audio" / "formats"
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_MAX_FILE_SIZE = "50mb"
TOP_CLASSES = 5
EXAMPLE_GENRES = ("rock", "classical", "hiphop", "jazz")
EXAMPLE_SECONDS = 12.0
# The fastest export a model has (OpenVINO int8, then ONNX Runtime int8; docs/serving.md, "OpenVINO backend"), falling back
# to the next when one does not load on this CPU; PyTorch for a model without an export.
DEFAULT_BACKEND = "auto"
# Hugging Face sets this variable on ZeroGPU hardware, where a GPU is attached only while a function decorated with
# `spaces.GPU` runs; the `spaces` package defers the models' move to `cuda` at startup until then.
ZERO_GPU_VARIABLE = "SPACES_ZERO_GPU"
# GPU seconds requested per analysis (ZeroGPU's default). A 10-minute song (the default --max_seconds) is decoded
# and featurised in a few seconds and its windows take well under a second on the GPU; a request that outlasts its
# duration is cut off, a longer duration queues behind shorter ones.
ZERO_GPU_DURATION = 60
# Partial results are sent after the first batch, then at most this often (each one redraws the timeline), and
# always at the end.
STREAM_INTERVAL_SECONDS = 0.5
BOTH = "both"  # the model choice that answers with all the models served (an ensemble)
# The music check of an upload analysed by a model without one (the ViT-hybrid): the AST-DoRA model on at most this
# many windows (10.24 s each), spread over the song.
MUSIC_CHECK_MAX_WINDOWS = 6


def model_specs(cli_models: list[str] | None, environ=os.environ) -> list[str]:
    """The models to serve: `--model` flags, else the comma-separated `GENRE_MODELS`."""
    specs = [m.strip() for m in (cli_models or []) if m.strip()]
    if not specs:
        specs = [m.strip() for m in environ.get("GENRE_MODELS", "").split(",") if m.strip()]
    if not specs:
        raise SystemExit(
            "No model to serve: pass --model DIR_OR_HUB_ID (repeatable) or set GENRE_MODELS to a comma-separated "
            "list (e.g. GENRE_MODELS=runs/vit_hybrid,runs/ast_dora); the models are output folders of "
            "finetune/run.py or Hub ids."
        )
    return list(dict.fromkeys(specs))


def on_zero_gpu(environ=os.environ) -> bool:
    return environ.get(ZERO_GPU_VARIABLE, "").strip().lower() not in ("", "0", "false")


def zero_gpu_options(backend: str, bf16: bool | None, environ=os.environ) -> dict:
    """How the models run: as asked, except on ZeroGPU, where `auto` means the torch backend (the GPU is the point;
    ONNX Runtime here runs on the CPU) and torch models go to `cuda` in bf16 (every ZeroGPU GPU has it; `--no_bf16`
    still keeps fp32). Asking CUDA about bf16 at startup is not an option there: no GPU is attached yet."""
    if not on_zero_gpu(environ):
        return {"backend": backend, "bf16": bf16}
    backend = TORCH_BACKEND if backend == "auto" else backend
    if get_backend(backend).exported:
        return {"backend": backend, "bf16": bf16}
    return {"backend": TORCH_BACKEND, "device": "cuda", "bf16": True if bf16 is None else bf16}


def gpu_function(function, environ=os.environ):
    """`function` inside `spaces.GPU` on ZeroGPU (a GPU is attached while it runs), else `function` itself, and
    `spaces` is not imported."""
    if not on_zero_gpu(environ):
        return function
    import spaces

    return spaces.GPU(duration=ZERO_GPU_DURATION)(function)


def load_classifiers(
    specs: list[str],
    max_seconds: float | None,
    bf16: bool | None = None,
    backend: str = DEFAULT_BACKEND,
    environ=os.environ,
    **options,
) -> dict[str, GenreClassifier]:
    """Load every model once at startup (each request then only runs it): spec -> classifier. `options` go to
    `GenreClassifier.from_pretrained` (e.g. batch_size); on ZeroGPU torch models are placed on `cuda`
    (`zero_gpu_options`)."""
    settings = zero_gpu_options(backend, bf16, environ)
    backend, bf16 = settings.pop("backend"), settings.pop("bf16")
    options = {**settings, **options}
    classifiers = {}
    for spec in specs:
        start = time.perf_counter()
        # bf16 holds for every backend (an exported runner compiles with it; its precision is in the log line).
        classifiers[spec] = GenreClassifier.from_pretrained(
            spec, backend=backend, max_seconds=max_seconds, bf16=bf16, **options
        )
        logger.info("loaded %s in %.1f s: %r", spec, time.perf_counter() - start, classifiers[spec])
    return classifiers


def model_choice_label(spec: str, classifier: GenreClassifier) -> str:
    name = Path(spec).name if os.path.isdir(spec) else spec
    return f"{classifier.spec.display_name} · {name}"


def example_files(examples_dir: str | os.PathLike | None = None) -> list[str]:
    """Example songs: the shared real recordings when they are there, plus a few generated clips (written once
    into `examples_dir`, default a folder in the system's temp dir), so a Space has examples too."""
    from ast_dora.data import synthesize_track

    folder = Path(examples_dir or Path(tempfile.gettempdir()) / "ast_dora_examples")
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(
        str(p) for p in SHARED_AUDIO.glob("*") if p.suffix.lower() in (".mp3", ".ogg", ".flac", ".wav")
    )
    for i, genre in enumerate(EXAMPLE_GENRES):
        path = folder / f"generated_{genre}.wav"
        if not path.is_file():
            import soundfile as sf

            audio = synthesize_track(genre, EXAMPLE_SECONDS, 22050, np.random.default_rng([7, i]))
            tmp = path.with_suffix(".tmp.wav")
            sf.write(tmp, audio, 22050, subtype="PCM_16")
            tmp.replace(path)  # another process starting at the same time never sees half a file
        files.append(str(path))
    return files


def summary_text(analysis, seconds: float, model_label: str) -> str:
    """The line under the genre label: partial (windows done so far) while the song is analysed, then final."""
    if analysis.music is not None and not analysis.music.is_music:
        like = analysis.music.sounds_like()
        state = "so far" if not analysis.complete else f"in {format_duration(analysis.duration)} of audio"
        return (
            f"**Not music** {state}: it sounds like **{like['label']}** ({like['score']:.2f}); AudioSet's music "
            f"probability is {analysis.music.music_probability:.2f} (below {analysis.music.min_music_probability:g}), "
            f"so no genre is given · {analysis.windows_done}/{analysis.windows_planned} windows analysed in "
            f"{seconds:.1f} s by {model_label}"
        )
    if not analysis.complete:
        return (
            f"**{analysis.genre}** ({analysis.confidence:.0%}) so far · {analysis.windows_done}/{analysis.windows_planned} "
            f"windows analysed in {seconds:.1f} s by {model_label} …"
        )
    sampled = (
        f" ({analysis.windows_planned} of its {analysis.windows_total} windows, spread over it)"
        if analysis.windows_planned < analysis.windows_total
        else ""
    )
    # A musicnn model also says what its pretrained network tags the song with.
    tags = (
        f" · tagged {analysis.tags_top()}"
        if getattr(analysis, "tags_top", None) and analysis.tags_top()
        else ""
    )
    return (
        f"**{analysis.genre}** ({analysis.confidence:.0%}) · majority vote of {analysis.windows_planned} "
        f"windows: **{analysis.vote}** · {format_duration(analysis.duration)} of audio{sampled} analysed in "
        f"{seconds:.1f} s by {model_label}{tags}"
    )


def label_value(analysis) -> dict[str, float]:
    """What the label shows: the genres, or for a song that is not music, what it sounds like (AudioSet)."""
    if analysis.music is not None and not analysis.music.is_music:
        return {f"not music: {item['label']}": item["score"] for item in analysis.music.top(TOP_CLASSES)}
    return analysis.label_probabilities()


def music_checker(classifiers: dict[str, GenreClassifier]) -> GenreClassifier | None:
    """The first model served that checks music (an AST-DoRA model with the AudioSet branch), or None."""
    return next((c for c in classifiers.values() if c.music_check), None)


def make_analyse(classifiers: dict[str, GenreClassifier], stream_interval: float = STREAM_INTERVAL_SECONDS):
    default_spec = BOTH if len(classifiers) > 1 else next(iter(classifiers))
    checker = music_checker(classifiers)
    ensemble = (
        GenreClassifier.ensemble(list(classifiers.values()), names=list(classifiers))
        if len(classifiers) > 1
        else None
    )

    def analyse(audio_path: str | None, model: str | None = None, progress=gr.Progress()):  # noqa: B008 (how Gradio injects progress)
        """Classify a song: top genres, the genre probabilities over time, and the full analysis as JSON; partial
        results after the first batch of windows, then updates until the whole song is done."""
        if not audio_path:
            raise gr.Error("No audio: upload a file or record with the microphone first.", title="No audio")
        spec = model or default_spec
        if spec == BOTH and ensemble is not None:
            classifier, label = ensemble, " + ".join(model_choice_label(s, c) for s, c in classifiers.items())
        elif spec in classifiers:
            classifier = classifiers[spec]
            label = model_choice_label(spec, classifier)
        else:
            choices = [*([BOTH] if ensemble is not None else []), *classifiers]
            raise gr.Error(
                f"Unknown model {spec!r}; choose one of: {', '.join(choices)}.", title="Unknown model"
            )
        start = time.perf_counter()
        last_sent = None
        try:
            music = None
            checks_itself = getattr(classifier, "music_check", False) or getattr(
                classifier, "music_checker", None
            )
            if checker is not None and not checks_itself:
                # The picked model cannot tell music from other sounds: the AST-DoRA model checks the upload first.
                music = checker.analyse(audio_path, max_windows=MUSIC_CHECK_MAX_WINDOWS).music
            for analysis in classifier.analyse_iter(audio_path):
                if music is not None:
                    analysis.music = music
                progress(
                    analysis.windows_done / analysis.windows_planned,
                    desc=f"{analysis.windows_done}/{analysis.windows_planned} windows",
                )
                now = time.perf_counter()
                if analysis.complete or last_sent is None or now - last_sent >= stream_interval:
                    last_sent = now
                    result = analysis.to_dict()
                    result["file"] = Path(audio_path).name
                    result["model"] = spec
                    if analysis.ensemble is not None:
                        result["backend"] = [c.runner.describe() for c in classifier.classifiers]
                    else:
                        result["backend"] = classifier.runner.describe()
                    result["windows_done"], result["windows_planned"] = (
                        analysis.windows_done,
                        analysis.windows_planned,
                    )
                    yield (
                        label_value(analysis),
                        plot_probability_timeline(analysis),
                        result,
                        summary_text(analysis, now - start, label),
                    )
        except InvalidAudioError as error:
            raise gr.Error(str(error), title="Cannot analyse this audio", print_exception=False) from None

    return analyse


def build_demo(
    classifiers: dict[str, GenreClassifier],
    examples: list[str] | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    environ=os.environ,
    library: str | None = None,
) -> gr.Blocks:
    analyse = gpu_function(make_analyse(classifiers), environ)
    choices = [(model_choice_label(spec, c), spec) for spec, c in classifiers.items()]
    if len(classifiers) > 1:  # one answer from all of them, the default
        choices.insert(0, ("Both: " + " + ".join(c.spec.display_name for c in classifiers.values()), BOTH))
    limit = f"up to {format_duration(max_seconds)}" if max_seconds else "any length"
    with gr.Blocks(title="Music genre classifier") as demo:
        gr.Markdown(
            "# Music genre classifier\n"
            f"Upload a song or record one ({limit}, at least 1 s; wav, mp3, flac, ogg, m4a, ...). The model listens "
            "to it window by window; the label shows the genres averaged over the song, the plot how they change "
            "along it."
        )
        with gr.Row():
            with gr.Column(scale=1):
                audio = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", label="Song", elem_id="song-input"
                )
                model = gr.Dropdown(choices=choices, value=choices[0][1], label="Model")
                button = gr.Button("Classify", variant="primary")
            with gr.Column(scale=2):
                label = gr.Label(num_top_classes=TOP_CLASSES, label="Genre", elem_id="genre-label")
                summary = gr.Markdown(elem_id="genre-summary")
                timeline = gr.Plot(label="Genre probabilities over time", elem_id="genre-timeline")
        with gr.Accordion("Full analysis (JSON)", open=False):
            details = gr.JSON(label="analysis")
        if examples:
            gr.Examples(examples=[[path] for path in examples], inputs=[audio], cache_examples=False)
        button.click(
            analyse, inputs=[audio, model], outputs=[label, timeline, details, summary], api_name="predict"
        )
        if library:
            build_library_view(library, analyse, model, [label, timeline, details, summary])
    return demo


def concurrency_limit(environ=os.environ) -> int:
    """Analyses served at once: `GENRE_CONCURRENCY` when set, else one per two CPUs this process may use (each
    analysis's model pool spans every CPU; two at once on two CPUs only take turns), at least one."""
    if environ.get("GENRE_CONCURRENCY", "").strip():
        return max(1, int(environ["GENRE_CONCURRENCY"]))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // 2)


def build_library_view(results: str, analyse, model, outputs) -> None:
    """The "Library" section (inside the demo's Blocks): a results file of `python -m ast_dora.tag`: the genre
    chart, the table filtered by genre and probability; a row picked plays the song, and "Re-analyse" runs it
    through the model picked above, its answer in the outputs above."""
    from ast_dora.tagging.library import ALL, TABLE_COLUMNS, Library
    from ast_dora.tagging.report import genre_figure

    shelf = Library(results)
    first = shelf.select()
    with gr.Accordion(
        f"Library: {Path(results).name} ({shelf.summary['songs']} songs, {shelf.model_id})", open=True
    ):
        chart = genre_figure(shelf.summary)
        gr.Plot(value=chart, label="Songs per genre", elem_id="library-chart")
        with gr.Row():
            genre = gr.Dropdown(choices=shelf.choices(), value=ALL, label="Genre", elem_id="library-genre")
            least = gr.Slider(
                0.0,
                1.0,
                value=0.0,
                step=0.05,
                label="Genre probability at least",
                elem_id="library-probability",
            )
        table = gr.Dataframe(
            value=Library.table(first),
            headers=TABLE_COLUMNS,
            interactive=False,
            label="Songs (select a row to hear it)",
            elem_id="library-table",
        )
        shown = gr.State([row["path"] for row in first])
        with gr.Row():
            song = gr.Audio(type="filepath", label="Selected song", interactive=False, elem_id="library-song")
            again = gr.Button("Re-analyse", elem_id="library-reanalyse")

    def refilter(chosen_genre, probability):
        rows = shelf.select(chosen_genre, probability)
        return Library.table(rows), [row["path"] for row in rows]

    def pick(paths, event: gr.SelectData):
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return paths[row] if 0 <= row < len(paths) else None

    for control in (genre, least):
        control.change(refilter, inputs=[genre, least], outputs=[table, shown])
    table.select(pick, inputs=[shown], outputs=[song])
    again.click(analyse, inputs=[song, model], outputs=outputs)


def launch(
    demo: gr.Blocks,
    server_name: str | None = None,
    port: int | None = None,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    allowed_paths: list[str] | None = None,
    **kwargs,
):
    """Queue and serve: `concurrency_limit()` analyses at once (every backend's runner is safe to share)."""
    demo.queue(max_size=32, default_concurrency_limit=concurrency_limit())
    return demo.launch(
        server_name=server_name,
        server_port=port,
        max_file_size=max_file_size,
        allowed_paths=allowed_paths,
        **kwargs,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="DIR_OR_HUB_ID",
        help="A model to serve (repeatable; the first is the default). Default: $GENRE_MODELS.",
    )
    parser.add_argument("--port", type=int, default=None, help="Port (default: $GRADIO_SERVER_PORT or 7860).")
    parser.add_argument(
        "--host", default=None, help="Address to bind (default: $GRADIO_SERVER_NAME or 127.0.0.1)."
    )
    parser.add_argument(
        "--max_seconds",
        type=float,
        default=float(os.environ.get("GENRE_MAX_SECONDS", DEFAULT_MAX_SECONDS)),
        help="Longest song accepted, in seconds (default 600; 0 for no limit).",
    )
    parser.add_argument(
        "--max_windows",
        type=int,
        default=int(os.environ.get("GENRE_MAX_WINDOWS", 0)),
        help="Analyse at most this many windows of a song, evenly spread over it (default 0: all).",
    )
    parser.add_argument(
        "--min_music_probability",
        type=float,
        default=float(os.environ.get("GENRE_MIN_MUSIC_PROBABILITY", DEFAULT_MIN_MUSIC_PROBABILITY)),
        help='An upload is music when AudioSet\'s "Music" probability reaches this (default '
        f'{DEFAULT_MIN_MUSIC_PROBABILITY}; docs/serving.md, "Music check").',
    )
    parser.add_argument(
        "--max_file_size",
        default=os.environ.get("GENRE_MAX_FILE_SIZE", DEFAULT_MAX_FILE_SIZE),
        help="Largest upload, e.g. 50mb (default).",
    )
    parser.add_argument(
        "--examples_dir",
        default=os.environ.get("GENRE_EXAMPLES_DIR"),
        help="Where the generated example clips are written (default: the temp dir).",
    )
    parser.add_argument(
        "--no_bf16",
        action="store_true",
        default=os.environ.get("GENRE_BF16", "1") == "0",
        help="Compute in fp32 on every backend (default: bf16 where it is measured faster than fp32, `ast_dora.hardware`).",
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default=os.environ.get("GENRE_BACKEND", DEFAULT_BACKEND),
        help="What runs the models: torch; onnx (ONNX Runtime on each model's onnx/ export, int8 "
        "when present); openvino (OpenVINO on its openvino/ export, int8 when present); auto: the "
        "fastest export each model has (openvino int8, onnx int8, ...), torch for the others. "
        f"Default: $GENRE_BACKEND or {DEFAULT_BACKEND}.",
    )
    parser.add_argument(
        "--library",
        default=os.environ.get("GENRE_LIBRARY"),
        metavar="RESULTS",
        help="Show a Library view of this results file of `python -m ast_dora.tag` (default: "
        "$GENRE_LIBRARY; none).",
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_music_probability <= 1.0:
        parser.error(f"min_music_probability must be between 0 and 1, got {args.min_music_probability}.")
    if args.max_windows < 0:
        parser.error(
            f"max_windows (GENRE_MAX_WINDOWS) must be 0 (all windows) or positive, got {args.max_windows}."
        )
    if args.backend not in BACKEND_CHOICES:  # a default from $GENRE_BACKEND is not checked by `choices`
        parser.error(f"GENRE_BACKEND={args.backend!r} is not one of {', '.join(BACKEND_CHOICES)}.")
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    max_seconds = args.max_seconds if args.max_seconds > 0 else None
    try:
        classifiers = load_classifiers(
            model_specs(args.model),
            max_seconds,
            bf16=False if args.no_bf16 else None,
            backend=args.backend,
            max_windows=args.max_windows or None,
            min_music_probability=args.min_music_probability,
        )
    except BackendError as error:  # e.g. no export on a torch-free install: one line, no traceback
        raise SystemExit(f"error: {error}") from None
    examples = example_files(args.examples_dir)
    demo = build_demo(classifiers, examples, max_seconds=max_seconds, library=args.library)
    allowed = {str(Path(p).parent) for p in examples}
    if args.library:  # the Library view plays the songs from where they are
        from ast_dora.tagging.library import Library

        allowed |= set(Library(args.library).folders())
    launch(
        demo,
        server_name=args.host,
        port=args.port,
        max_file_size=args.max_file_size,
        allowed_paths=sorted(allowed),
    )


if __name__ == "__main__":
    main()
