"""The synthetic GTZAN: layout, determinism, manifest handling, CLI, and that the genres are separable."""

import json
import time

import numpy as np
import pytest
import soundfile as sf

from ast_dora.data import GTZAN_GENRES, ensure_synthetic_gtzan, generate_synthetic_gtzan, synthesize_track
from ast_dora.data.synthetic import main as synthetic_main


def test_layout_format_and_manifest(tmp_path):
    paths = generate_synthetic_gtzan(tmp_path, tracks_per_genre=2, duration_seconds=3.0)
    assert len(paths) == 20
    for genre in GTZAN_GENRES:
        for i in range(2):
            info = sf.info(tmp_path / genre / f"{genre}.{i:05d}.wav")
            assert info.samplerate == 22050 and info.channels == 1 and info.subtype == "PCM_16"
            assert info.frames == 3 * 22050
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (
        manifest["tracks_per_genre"] == 2 and manifest["duration_seconds"] == 3.0 and manifest["files"] == 20
    )


def test_deterministic_and_varied():
    a = synthesize_track("jazz", 2.0, 22050, np.random.default_rng([0, 5, 1]))
    b = synthesize_track("jazz", 2.0, 22050, np.random.default_rng([0, 5, 1]))
    c = synthesize_track("jazz", 2.0, 22050, np.random.default_rng([0, 5, 2]))
    assert np.array_equal(a, b) and not np.allclose(a, c)
    for genre in GTZAN_GENRES:
        x = synthesize_track(genre, 2.0, 22050, np.random.default_rng([1, 0, 0]))
        assert x.dtype == np.float32 and np.isfinite(x).all() and 0.3 < np.abs(x).max() <= 1.0


def test_ensure_reuses_regenerates_and_protects(tmp_path, caplog):
    root = tmp_path / "syn"
    ensure_synthetic_gtzan(root, tracks_per_genre=1, duration_seconds=1.0)
    first = (root / "rock" / "rock.00000.wav").stat().st_mtime_ns
    ensure_synthetic_gtzan(root, tracks_per_genre=1, duration_seconds=1.0)
    assert (root / "rock" / "rock.00000.wav").stat().st_mtime_ns == first  # reused
    ensure_synthetic_gtzan(root, tracks_per_genre=2, duration_seconds=1.0)  # other parameters: regenerated
    assert (root / "rock" / "rock.00001.wav").is_file()
    assert json.loads((root / "manifest.json").read_text())["tracks_per_genre"] == 2
    (root / "rock" / "rock.00001.wav").unlink()  # incomplete: regenerated
    ensure_synthetic_gtzan(root, tracks_per_genre=2, duration_seconds=1.0)
    assert (root / "rock" / "rock.00001.wav").is_file()
    foreign = tmp_path / "mine"
    (foreign / "blues").mkdir(parents=True)
    (foreign / "blues" / "blues.00000.wav").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="manifest.json"):
        ensure_synthetic_gtzan(foreign, tracks_per_genre=1, duration_seconds=1.0)


def test_cli(tmp_path, capsys):
    synthetic_main([str(tmp_path / "cli"), "--tracks_per_genre", "1", "--duration", "1.5"])
    assert len(list((tmp_path / "cli").glob("*/*.wav"))) == 10
    assert "wrote 10 tracks" in capsys.readouterr().out


def test_generation_is_fast(tmp_path):
    start = time.process_time()
    generate_synthetic_gtzan(tmp_path, tracks_per_genre=2, duration_seconds=12.0)
    per_track = (time.process_time() - start) / 20
    assert per_track < 0.25, f"{per_track:.3f} s of CPU per 12-s track"


def test_genres_separable_by_log_mel_statistics():
    """Mean/std of 128 log-mel bands of 4-s windows, logistic regression, tested on unseen tracks."""
    import torch
    import torchaudio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ast_dora.data.windows import cut_windows

    sr = 22050
    mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=2048, hop_length=512, n_mels=128)
    X, y, track = [], [], []
    for g, genre in enumerate(GTZAN_GENRES):
        for i in range(6):
            x = synthesize_track(genre, 8.0, sr, np.random.default_rng([7, g, i]))
            windows, _ = cut_windows(x, 4 * sr, 2 * sr)
            m = torch.log(mel(torch.from_numpy(windows)) + 1e-6).numpy()
            X.append(np.concatenate([m.mean(-1), m.std(-1)], axis=1))
            y += [g] * len(windows)
            track += [i] * len(windows)
    X, y, track = np.concatenate(X), np.array(y), np.array(track)
    test = track >= 4
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)).fit(X[~test], y[~test])
    accuracy = clf.score(X[test], y[test])
    assert accuracy >= 0.9, accuracy
