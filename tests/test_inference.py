"""Song-level inference (`GenreClassifier`), the batched AST features, the plots, the `predict` CLI and the song
benchmark, on tiny random-weight models of both kinds saved like trained ones."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from song_fixtures import (
    REAL_AUDIO,
    generated_wav,
    mp3_song,
    save_tiny_model,
    short_song,
    silent_song,
    text_named_wav,
    wav_song,
)
from transformers import ASTFeatureExtractor

from ast_dora import predict
from ast_dora.data import cut_windows, decode_audio
from ast_dora.inference import (
    GenreClassifier,
    NotAudioError,
    SilentAudioError,
    TooLongAudioError,
    TooShortAudioError,
)
from ast_dora.models.ast_mlp.fbank import ASTFbankFeatures

NUM_GENRES = 10


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {kind: save_tiny_model(kind, root / kind) for kind in ("vit_hybrid", "ast_dora")}


@pytest.fixture(scope="module")
def vit(model_dirs):
    return GenreClassifier.from_pretrained(model_dirs["vit_hybrid"], bf16=False)


@pytest.fixture(scope="module")
def ast(model_dirs):
    return GenreClassifier.from_pretrained(model_dirs["ast_dora"], bf16=False)


def check_analysis(analysis, duration=None):
    assert analysis.probabilities.shape == (NUM_GENRES,)
    assert analysis.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    assert analysis.window_probabilities.shape == (len(analysis.window_starts), NUM_GENRES)
    np.testing.assert_allclose(analysis.window_probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert analysis.genre == analysis.labels[int(np.argmax(analysis.probabilities))]
    assert analysis.vote in analysis.labels and 0 < analysis.confidence <= 1
    if duration is not None:
        assert analysis.duration == pytest.approx(duration, abs=0.05)
        assert analysis.window_ends[-1] == pytest.approx(duration, abs=0.05)


# ---- features ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_mel_bins": 64, "max_length": 512, "do_normalize": False}],
    ids=["default", "truncated"],
)
def test_batched_ast_features_equal_the_feature_extractor(kwargs):
    extractor = ASTFeatureExtractor(**kwargs)
    rng = np.random.default_rng(0)
    windows = [0.1 * rng.standard_normal(163840).astype(np.float32), np.zeros(163840, np.float32)]
    real = REAL_AUDIO / "gtzan" / "jazz" / "jazz.00000.wav"
    if real.is_file():
        windows.append(decode_audio(str(real), 16000).waveform[:163840])
    else:
        windows.append(0.3 * np.sin(np.arange(163840) / 16000 * 2 * np.pi * 440).astype(np.float32))
    batch = np.stack(windows)
    expected = extractor(list(batch), sampling_rate=16000, return_tensors="np")["input_values"]
    fast = ASTFbankFeatures(extractor)(batch)  # numpy, against torchaudio's kaldi fbank inside the extractor
    assert fast.shape == expected.shape == (3, extractor.max_length, extractor.num_mel_bins)
    np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-4)


# ---- analysing songs -----------------------------------------------------------------------------------------


def test_wav_song_windows_probabilities_and_vote(vit, tmp_path):
    song = wav_song(tmp_path)
    duration = sf.info(str(song)).duration
    analysis = vit.analyse(song)
    check_analysis(analysis, duration)
    # the data layer's windows: 4 s back to back by default, the last ending at the end of the song
    waveform = decode_audio(str(song), 22050).waveform
    windows, starts = cut_windows(waveform, 88200, 88200)
    np.testing.assert_allclose(analysis.window_starts, starts / 22050)
    # batched analysis == the same windows classified on their own (the first two and the last, end-aligned)
    picked = [0, 1, len(starts) - 1]
    np.testing.assert_allclose(
        analysis.window_probabilities[picked], vit.predict_windows(windows[picked]), atol=1e-5
    )
    np.testing.assert_allclose(analysis.probabilities, analysis.window_probabilities.mean(axis=0), atol=1e-12)
    counts = np.bincount(analysis.window_probabilities.argmax(axis=1), minlength=NUM_GENRES)
    assert counts[analysis.labels.index(analysis.vote)] == counts.max()
    result = analysis.to_dict()
    assert set(result) >= {"file", "genre", "confidence", "probabilities", "vote", "segments"}
    assert result["segments"][0]["start"] == 0.0 and len(result["segments"]) == len(starts)
    assert set(result["segments"][-1]) == {"start", "end", "probabilities"}


def test_overlapping_windows_with_a_smaller_hop(model_dirs, tmp_path):
    song = wav_song(tmp_path)
    back_to_back = GenreClassifier.from_pretrained(model_dirs["vit_hybrid"], bf16=False)
    overlapping = GenreClassifier.from_pretrained(model_dirs["vit_hybrid"], bf16=False, hop_seconds=2.0)
    waveform = decode_audio(str(song), 22050).waveform
    _, starts = cut_windows(waveform, 88200, 44100)
    analysis = overlapping.analyse(song)
    np.testing.assert_allclose(analysis.window_starts, starts / 22050)
    assert len(back_to_back.analyse(song).window_starts) < len(starts)


def test_vit_hybrid_takes_eager_attention_for_bf16_on_cpu_with_the_same_logits(model_dirs):
    from ast_dora.models.factory import load_trained_model, use_fastest_attention

    model, feature_extractor = load_trained_model(str(model_dirs["vit_hybrid"]))
    model.eval().set_attn_implementation("sdpa")
    use_fastest_attention(model, "cpu", bf16=False)  # fp32: SDPA stays
    assert model.config._attn_implementation == "sdpa"
    x = torch.rand(3, 1, *model.config.image_size)
    with torch.no_grad():
        sdpa_logits = model(x).logits
        use_fastest_attention(model, "cpu", bf16=True)
        assert model.config._attn_implementation == "eager"
        torch.testing.assert_close(model(x).logits, sdpa_logits, atol=1e-5, rtol=1e-5)
    fresh, _ = load_trained_model(str(model_dirs["vit_hybrid"]))
    classifier = GenreClassifier(fresh, feature_extractor, bf16=True, device="cpu")
    assert classifier.model.config._attn_implementation == "eager"


def test_mean_and_majority_vote_can_disagree(vit, monkeypatch):
    # 3 windows say "blues" weakly, 2 say "rock" strongly: the mean picks rock, the vote blues.
    rows = np.full((5, NUM_GENRES), 0.02)
    rows[:3, 0], rows[:3, 9] = 0.42, 0.40
    rows[3:, 9], rows[3:, 0] = 0.80, 0.02
    rows /= rows.sum(axis=1, keepdims=True)
    served = iter(rows)
    monkeypatch.setattr(vit, "_probabilities", lambda x: np.stack([next(served) for _ in range(len(x))]))
    analysis = vit.analyse(np.ones(int(20 * 22050), np.float32) * 0.1, sampling_rate=22050)
    assert len(analysis.window_starts) == 5
    assert (analysis.genre, analysis.vote) == ("rock", "blues")


def test_windows_go_through_the_model_in_bounded_batches(model_dirs):
    classifier = GenreClassifier.from_pretrained(
        model_dirs["vit_hybrid"], batch_size=4, bf16=False, hop_seconds=2.0
    )
    seen = []
    forward = classifier.model.forward
    classifier.model.forward = lambda input_values, **kw: (
        seen.append(input_values.shape[0]) or forward(input_values, **kw)
    )
    progress = []
    waveform = 0.1 * np.random.default_rng(1).standard_normal(int(31 * 22050)).astype(np.float32)
    analysis = classifier.analyse(
        waveform, sampling_rate=22050, progress=lambda done, total: progress.append((done, total))
    )
    assert len(analysis.window_starts) == 15 and sum(seen) == 15 and max(seen) == 4
    assert progress[-1] == (15, 15) and len(progress) == 4


def test_arrays_any_rate_and_layout_match_the_file(vit, tmp_path):
    song = generated_wav(tmp_path / "stereo.wav", 9.0, sampling_rate=22050, channels=2)
    from_file = vit.analyse(song)
    pcm, rate = sf.read(song, dtype="int16")  # (samples, channels) int16, as Gradio's numpy audio
    for array in (pcm, pcm.T.copy(), torch.from_numpy(pcm.astype(np.float32) / 32767)):
        from_array = vit.analyse(array, sampling_rate=rate)
        np.testing.assert_allclose(from_array.window_probabilities, from_file.window_probabilities, atol=1e-4)
    # another rate is resampled to the model's: same windows, close probabilities
    resampled = vit.analyse(sf.read(generated_wav(tmp_path / "hi.wav", 9.0, 48000))[0], sampling_rate=48000)
    assert resampled.sampling_rate == 22050 and len(resampled.window_starts) == len(from_file.window_starts)
    with pytest.raises(ValueError, match="sampling_rate"):
        vit.analyse(pcm)


def test_short_song_is_one_padded_window(ast, tmp_path):
    analysis = ast.analyse(generated_wav(tmp_path / "two_s.wav", 2.0))
    check_analysis(analysis, 2.0)
    assert list(analysis.window_starts) == [0.0] and analysis.window_ends[0] == pytest.approx(2.0, abs=0.01)


@pytest.mark.parametrize("name", ["mp3", "ogg", "flac"])
def test_ast_dora_reads_compressed_formats(ast, tmp_path, name):
    if name == "mp3":
        song = mp3_song(tmp_path)
    else:
        real = {
            "ogg": REAL_AUDIO / "formats" / "jazz_vibe_ace.ogg",
            "flac": REAL_AUDIO / "formats" / "electronic_dubstep.flac",
        }[name]
        if real.is_file():
            song = real
        else:
            from ast_dora.benchmarks.song import generated_song

            song = generated_song(tmp_path / f"song.{name}", seconds=8.0)
    analysis = ast.analyse(song)
    check_analysis(analysis)
    assert analysis.window_seconds == 10.24 and analysis.source == str(song)


def test_bad_audio_is_refused_with_a_clear_message(vit, tmp_path, model_dirs):
    with pytest.raises(NotAudioError, match="Could not read notes.wav as audio"):
        vit.analyse(text_named_wav(tmp_path))
    with pytest.raises(NotAudioError, match="no such file"):
        vit.analyse(tmp_path / "missing.mp3")
    with pytest.raises(TooShortAudioError, match=r"0\.50 s long; at least 1 s"):
        vit.analyse(short_song(tmp_path))
    with pytest.raises(SilentAudioError, match="silent"):
        vit.analyse(silent_song(tmp_path))
    limited = GenreClassifier.from_pretrained(model_dirs["vit_hybrid"], max_seconds=5)
    with pytest.raises(TooLongAudioError, match="up to 5.0 s"):
        limited.analyse(generated_wav(tmp_path / "long.wav", 6.0, channels=1))


def test_bf16_autocast_stays_close_to_fp32(model_dirs, tmp_path):
    song = generated_wav(tmp_path / "song.wav", 8.0, channels=1)
    fp32 = GenreClassifier.from_pretrained(model_dirs["vit_hybrid"], bf16=False).analyse(song)
    bf16 = GenreClassifier.from_pretrained(model_dirs["vit_hybrid"], bf16=True).analyse(song)
    np.testing.assert_allclose(bf16.window_probabilities, fp32.window_probabilities, atol=0.02)
    assert not np.array_equal(bf16.window_probabilities, fp32.window_probabilities)  # bf16 really ran


# ---- CLI, plots, benchmark -----------------------------------------------------------------------------------


def test_predict_cli_json_table_plot_and_bad_files(model_dirs, tmp_path, capsys):
    good = generated_wav(tmp_path / "good.wav", 6.0)
    other = generated_wav(tmp_path / "other.flac", 3.0, genre="jazz")
    bad = text_named_wav(tmp_path)
    code = predict.main(
        [
            str(good),
            str(bad),
            str(other),
            "--model",
            str(model_dirs["vit_hybrid"]),
            "--json",
            "--plot",
            str(tmp_path / "plots" / "out.png"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1, "a bad file must make the exit status non-zero"
    rows = json.loads(captured.out)
    assert [row["file"] for row in rows] == [str(good), str(bad), str(other)]
    assert "notes.wav" in captured.err and "Could not read" in rows[1]["error"]
    for row in (rows[0], rows[2]):
        assert set(row) >= {"file", "genre", "confidence", "probabilities", "vote", "segments"}
        assert len(row["probabilities"]) == NUM_GENRES and sum(
            row["probabilities"].values()
        ) == pytest.approx(1.0)
        assert row["genre"] == max(row["probabilities"], key=row["probabilities"].get)
        assert all(set(s) == {"start", "end", "probabilities"} for s in row["segments"])
    for stem in ("good", "other"):
        png = tmp_path / "plots" / f"out_{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    code = predict.main(
        [str(good), "--model", str(model_dirs["ast_dora"]), "--plot", str(tmp_path / "one.png")]
    )
    table = capsys.readouterr().out
    assert code == 0 and (tmp_path / "one.png").is_file()
    assert table.splitlines()[0].split()[:6] == ["file", "duration", "music", "genre", "confidence", "vote"]
    assert str(good) in table.splitlines()[1]


def test_plots_bars_and_timeline(vit, tmp_path):
    from ast_dora.plots import plot_probability_bars, plot_probability_timeline

    analysis = vit.analyse(generated_wav(tmp_path / "song.wav", 10.0))
    bars = plot_probability_bars(analysis)
    assert len(bars.axes[0].patches) == NUM_GENRES
    timeline = plot_probability_timeline(analysis, top_k=3)
    lines = timeline.axes[0].get_lines()
    assert len(lines) == 3 and len(lines[0].get_xdata()) == len(analysis.window_starts)
    assert [line.get_label() for line in lines] == [genre for genre, _ in analysis.top(3)]


def test_bench_song_reports_latency_beside_song_length(model_dirs, tmp_path):
    from ast_dora import bench

    out = tmp_path / "song.json"
    result = bench.main(
        [
            "song",
            "--model",
            str(model_dirs["ast_dora"]),
            "--seconds",
            "21",
            "--runs",
            "2",
            "--warmup",
            "0",
            "--json",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["song_seconds"] == pytest.approx(21.0, abs=0.1) and saved["latency_s"] > 0
    assert result["windows"] == 3 and len(saved["latencies_s"]) == 2
    # the AST-DoRA model checks music: the same runs timed without the check give the check's share of the time
    assert saved["music_check"] is True and 0 < saved["latency_without_music_check_s"]
    assert saved["music_check_share"] == pytest.approx(
        1 - saved["latency_without_music_check_s"] / saved["latency_with_music_check_s"]
    )
    assert -1 < saved["music_check_cpu_share"] < 1 and -1 < saved["music_check_model_share"] < 1
