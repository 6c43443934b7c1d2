"""The whole-song `audio-classification` pipeline saved with every model (`ast_dora/genre_classification/`).

In a process that never imports this project, `pipeline("audio-classification", model=DIR, trust_remote_code=True)`
on the real 30-s GTZAN track gives the mean window probabilities of `python -m ast_dora.predict --json` (1e-5),
not the first window's; a 3-minute mp3 runs in bounded memory and agrees with the project's song analysis;
`top_k`, `batch_size`, `return_segments`, `hop_seconds` and the accepted inputs behave as documented.

Models: tiny random-weight ViT-hybrid and merged AST-DoRA saved by the project's save path
(`save_trained_model`, through `song_fixtures.save_tiny_model`): the same files a training run writes; the tiny
training run and the adapter repo go through the same pipeline in tests/test_hub.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from song_fixtures import REAL_AUDIO, generated_wav, save_tiny_model
from transformers import pipeline

from ast_dora.genre_classification.song_windows import seconds_to_samples, window_starts
from ast_dora.inference import GenreClassifier

REAL_TRACK = REAL_AUDIO / "gtzan" / "rock" / "rock.00000.wav"
needs_real_track = pytest.mark.skipif(not REAL_TRACK.is_file(), reason=f"{REAL_TRACK} is not there")
# Both sides run the same modules in fp32 on the same samples; what remains is float rounding.
PROBABILITY_ATOL = 1e-5
NUM_GENRES = 10


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    # Folder names that are not module names of this project: transformers imports the remote code as
    # `transformers_modules.<folder>...`.
    root = tmp_path_factory.mktemp("pipeline_models")
    return {kind: save_tiny_model(kind, root / f"{kind}_model") for kind in ("vit_hybrid", "ast_dora")}


@pytest.fixture(scope="module")
def vit_pipeline(model_dirs):
    return pipeline("audio-classification", model=str(model_dirs["vit_hybrid"]), trust_remote_code=True)


def clean_env(workdir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(workdir / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    return env


def run_clean(script: str, workdir: Path, *args: str) -> dict:
    """Run `script` in a fresh interpreter without this project on its path; `script` sets `result` (JSON), which
    comes back once the interpreter has checked that nothing of this project was imported."""
    (workdir / "script.py").write_text(textwrap.dedent(script) + NO_PROJECT_CHECK)
    result = subprocess.run(
        [sys.executable, "script.py", *args],
        cwd=workdir,
        env=clean_env(workdir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((workdir / "result.json").read_text())


NO_PROJECT_CHECK = """
import json, sys
imported = sorted(name for name in sys.modules if name == "ast_dora" or name.startswith("ast_dora."))
assert not imported, f"the project got imported: {imported}"
open("result.json", "w").write(json.dumps(result))
"""


# ---- the Done-when comparison: a fresh process against `python -m ast_dora.predict --json` ----------------------


@needs_real_track
def test_pipeline_in_a_clean_process_equals_predict_on_the_real_track(model_dirs, tmp_path):
    results = run_clean(
        """
        import sys

        from transformers import pipeline

        track, *model_dirs = sys.argv[1:]
        result = {}
        for model_dir in model_dirs:
            classifier = pipeline("audio-classification", model=model_dir, trust_remote_code=True)
            result[model_dir] = {"class": type(classifier).__module__ + "." + type(classifier).__name__,
                                 "output": classifier(track, top_k=None, return_segments=True)}
        """,
        tmp_path,
        str(REAL_TRACK),
        *(str(d) for d in model_dirs.values()),
    )

    for kind, model_dir in model_dirs.items():
        result = results[str(model_dir)]
        assert result["class"].startswith("transformers_modules."), result[
            "class"
        ]  # the folder's remote code
        assert result["class"].endswith("pipeline_genre_classification.GenreClassificationPipeline")
        output = result["output"]
        # The pipeline runs the model in its saved dtype (fp32); `predict` picks bf16 on CPUs with native bf16
        # (3.6e-5 away on the tiny ViT-hybrid), so it is asked for fp32, its default elsewhere.
        command = [
            sys.executable,
            "-m",
            "ast_dora.predict",
            str(REAL_TRACK),
            "--model",
            str(model_dir),
            "--json",
            "--no_bf16",
            "--quiet",
        ]
        predicted = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        [expected] = json.loads(predicted.stdout)
        labels = list(expected["probabilities"])
        scores = {entry["label"]: entry["score"] for entry in output["predictions"]}
        assert sorted(scores) == sorted(labels)
        pipeline_mean = np.array([scores[label] for label in labels])
        predict_mean = np.array([expected["probabilities"][label] for label in labels])
        np.testing.assert_allclose(pipeline_mean, predict_mean, rtol=0, atol=PROBABILITY_ATOL, err_msg=kind)
        assert output["vote"] == expected["vote"]
        # every window of the 30 s, where predict put them
        assert [(s["start"], s["end"]) for s in expected["segments"]] == [
            (round(s["start"], 3), round(s["end"], 3)) for s in output["segments"]
        ]
        assert len(output["segments"]) == {"vit_hybrid": 8, "ast_dora": 3}[kind]
        assert output["segments"][-1]["end"] == pytest.approx(30.013, abs=0.001)
        # ... and not the first window's answer, which is what transformers' own pipeline gives
        first_window = np.array([output["segments"][0]["probabilities"][label] for label in labels])
        assert np.abs(first_window - predict_mean).max() > 10 * PROBABILITY_ATOL, kind


def test_every_saved_folder_names_the_pipeline_and_carries_its_code(model_dirs):
    for model_dir in model_dirs.values():
        config = json.loads((model_dir / "config.json").read_text())
        assert config["custom_pipelines"] == {
            "audio-classification": {
                "impl": "pipeline_genre_classification.GenreClassificationPipeline",
                "pt": ["AutoModelForAudioClassification"],
                "type": "audio",
            }
        }
        assert (model_dir / "pipeline_genre_classification.py").is_file() and (
            model_dir / "song_windows.py"
        ).is_file()
        assert json.loads((model_dir / "preprocessor_config.json").read_text())["window_seconds"] > 0


# ---- a long mp3: bounded memory, and the project's own analysis of the same file --------------------------------


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    from ast_dora.benchmarks.song import generated_song

    root = tmp_path_factory.mktemp("songs")
    return {
        "30s": generated_song(root / "song_30s.mp3", seconds=30.0, seed=1),
        "3min": generated_song(root / "song_3min.mp3", seconds=180.0),
    }


@pytest.mark.slow
def test_three_minute_mp3_in_bounded_memory_equals_the_song_analysis(model_dirs, songs, tmp_path):
    batch_size = 8
    result = run_clean(
        """
        import resource
        import sys

        from transformers import pipeline

        model_dir, short_song, long_song, batch_size = sys.argv[1:]
        classifier = pipeline("audio-classification", model=model_dir, trust_remote_code=True,
                              batch_size=int(batch_size))
        windows_per_call = []

        class CountingExtractor:
            def __init__(self, inner):
                self.inner = inner

            def __getattr__(self, name):
                return getattr(self.inner, name)

            def __call__(self, windows, **kwargs):
                windows_per_call.append(len(windows))
                return self.inner(windows, **kwargs)

        classifier.feature_extractor = CountingExtractor(classifier.feature_extractor)

        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        classifier(short_song)  # warm-up: lazily imported modules, allocator pools
        short = classifier(short_song, top_k=None, return_segments=True)
        after_short = peak_mb()
        windows_per_call.clear()
        long = classifier(long_song, top_k=None, return_segments=True)
        after_long = peak_mb()
        result = {"short": short, "long": long, "after_short": after_short, "after_long": after_long,
                  "windows_per_call": windows_per_call}
        """,
        tmp_path,
        str(model_dirs["vit_hybrid"]),
        str(songs["30s"]),
        str(songs["3min"]),
        str(batch_size),
    )

    long = result["long"]
    assert long["duration"] == pytest.approx(180.0, abs=0.1)
    expected_windows = len(window_starts(seconds_to_samples(long["duration"], 22050), 4 * 22050, 4 * 22050))
    assert len(long["segments"]) == expected_windows == 45
    assert (
        sum(result["windows_per_call"]) == expected_windows and max(result["windows_per_call"]) == batch_size
    )
    # Six times the audio, the same peak bar the decoded waveform: measured +27 MB on this project's CPU, and
    # +199 MB when all 45 windows are featurised at once (batch_size=64).
    growth = result["after_long"] - result["after_short"]
    assert growth < 100, f"peak RSS grew by {growth:.0f} MB from the 30-s to the 3-min song"

    # 44.1-kHz stereo mp3: decoded, downmixed and resampled as the project's song analysis does
    analysis = GenreClassifier.from_pretrained(model_dirs["vit_hybrid"], bf16=False).analyse(songs["3min"])
    scores = {entry["label"]: entry["score"] for entry in long["predictions"]}
    np.testing.assert_allclose(
        [scores[label] for label in analysis.labels], analysis.probabilities, rtol=0, atol=PROBABILITY_ATOL
    )
    np.testing.assert_allclose([s["start"] for s in long["segments"]], analysis.window_starts, atol=1e-9)


# ---- arguments and inputs (in this process: the pipeline class still comes from the folder's remote code) -------


@pytest.fixture(scope="module")
def song_12s(tmp_path_factory):
    return generated_wav(tmp_path_factory.mktemp("song") / "song.wav", 12.0, sampling_rate=22050, channels=1)


def test_top_k_returns_the_most_probable_genres_in_order(vit_pipeline, song_12s):
    everything = vit_pipeline(str(song_12s), top_k=None)
    assert len(everything) == NUM_GENRES
    scores = [entry["score"] for entry in everything]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-9)
    assert vit_pipeline(str(song_12s)) == everything[:5]  # transformers' default top_k
    assert vit_pipeline(str(song_12s), top_k=3) == everything[:3]
    assert vit_pipeline(str(song_12s), top_k=50) == everything  # at most every genre
    top_one = pipeline(
        "audio-classification",
        model=vit_pipeline.model,
        feature_extractor=vit_pipeline.feature_extractor,
        pipeline_class=type(vit_pipeline),
        top_k=1,
    )
    assert top_one(str(song_12s)) == everything[:1]
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        vit_pipeline(str(song_12s), top_k=0)


def test_return_segments_gives_the_timeline_behind_the_answer(vit_pipeline, song_12s):
    output = vit_pipeline(str(song_12s), top_k=None, return_segments=True)
    assert set(output) == {"predictions", "vote", "duration", "segments"}
    assert output["duration"] == pytest.approx(12.0, abs=1e-3)
    assert [(s["start"], s["end"]) for s in output["segments"]] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    windows = np.array(
        [[s["probabilities"][entry["label"]] for entry in output["predictions"]] for s in output["segments"]]
    )
    np.testing.assert_allclose(windows.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(
        windows.mean(axis=0), [entry["score"] for entry in output["predictions"]], atol=1e-12
    )
    labels = [entry["label"] for entry in output["predictions"]]
    votes = [labels[int(i)] for i in windows.argmax(axis=1)]
    assert output["vote"] in votes and votes.count(output["vote"]) == max(votes.count(v) for v in votes)
    assert (
        vit_pipeline(str(song_12s), top_k=2, return_segments=True)["predictions"] == output["predictions"][:2]
    )
    assert vit_pipeline(str(song_12s), return_segments=False) == output["predictions"][:5]

    overlapping = vit_pipeline(str(song_12s), return_segments=True, hop_seconds=2.0)["segments"]
    assert [s["start"] for s in overlapping] == [0.0, 2.0, 4.0, 6.0, 8.0]

    short = vit_pipeline(np.full(2 * 22050, 0.1, np.float32), return_segments=True)
    assert [(s["start"], s["end"]) for s in short["segments"]] == [(0.0, 2.0)]  # zero-padded to one window


def test_batch_size_bounds_the_windows_per_forward_and_changes_no_number(vit_pipeline, song_12s):
    seen = []
    forward = vit_pipeline.model.forward
    vit_pipeline.model.forward = lambda input_values, **kw: (
        seen.append(input_values.shape[0]) or forward(input_values, **kw)
    )
    try:
        one_by_one = vit_pipeline(str(song_12s), top_k=None, batch_size=1)
        assert seen == [1, 1, 1]
        seen.clear()
        together = vit_pipeline(str(song_12s), top_k=None, batch_size=2)
        assert seen == [2, 1]
    finally:
        vit_pipeline.model.forward = forward
    assert [e["label"] for e in one_by_one] == [e["label"] for e in together]
    np.testing.assert_allclose([e["score"] for e in one_by_one], [e["score"] for e in together], atol=1e-6)


def test_arrays_dicts_and_files_give_the_song_analysis_answer(vit_pipeline, model_dirs, tmp_path):
    classifier = GenreClassifier.from_pretrained(model_dirs["vit_hybrid"], bf16=False)
    stereo = generated_wav(tmp_path / "stereo.wav", 9.0, sampling_rate=44100, channels=2)
    import soundfile as sf

    pcm, rate = sf.read(stereo, dtype="int16")  # (samples, channels) int16 at 44.1 kHz

    def mean_scores(output):
        scores = {entry["label"]: entry["score"] for entry in output}
        return np.array([scores[label] for label in classifier.labels])

    expected = classifier.analyse(pcm, sampling_rate=rate).probabilities
    np.testing.assert_allclose(
        mean_scores(vit_pipeline({"raw": pcm, "sampling_rate": rate}, top_k=None)),
        expected,
        rtol=0,
        atol=PROBABILITY_ATOL,
    )
    np.testing.assert_allclose(
        mean_scores(vit_pipeline({"array": pcm.T.copy(), "sampling_rate": rate}, top_k=None)),
        expected,
        rtol=0,
        atol=PROBABILITY_ATOL,
    )  # (channels, samples), datasets' key
    from_file = classifier.analyse(stereo)
    np.testing.assert_allclose(
        mean_scores(vit_pipeline(str(stereo), top_k=None)),
        from_file.probabilities,
        rtol=0,
        atol=PROBABILITY_ATOL,
    )
    np.testing.assert_allclose(
        mean_scores(vit_pipeline(stereo.read_bytes(), top_k=None)),
        from_file.probabilities,
        rtol=0,
        atol=PROBABILITY_ATOL,
    )
    mono = classifier.load_audio(str(stereo))  # 1-D at the model's rate
    np.testing.assert_allclose(
        mean_scores(vit_pipeline(mono, top_k=None)), from_file.probabilities, rtol=0, atol=PROBABILITY_ATOL
    )
    assert [len(o) for o in vit_pipeline([str(stereo), mono], top_k=2)] == [2, 2]  # a list of songs

    with pytest.raises(ValueError, match='"sampling_rate"'):
        vit_pipeline({"raw": mono})
    with pytest.raises(TypeError, match="Expected a file path"):
        vit_pipeline(3.5)
    with pytest.raises(ValueError, match="no such file"):
        vit_pipeline(str(tmp_path / "missing.wav"))
    with pytest.raises(ValueError, match="NaN"):
        vit_pipeline(np.full(22050, np.nan, np.float32))
