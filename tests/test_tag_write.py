"""`python -m ast_dora.tag --write_tags` / `--dry_run` / `--undo`: the genre goes into mp3, ogg (vorbis and opus),
opus, flac and m4a files' own tags, the decoded samples are identical before and after, PyAV still reads every
file, a wav is listed and left alone, and the undo log puts every old tag back."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from song_fixtures import save_tiny_model

from ast_dora import tag
from ast_dora.data import encode_audio
from ast_dora.tagging.file_tags import read_genre, replace_genre

pytest.importorskip(
    "mutagen", reason="mutagen is not installed: pip install mutagen (the project depends on it)"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model("vit_hybrid", tmp_path_factory.mktemp("tag_write") / "vit_hybrid")


def music(seconds: float = 4.0, sampling_rate: int = 44100, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    rng = np.random.default_rng(seed)
    mono = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) * np.exp(-(t % 0.5)) + 0.02 * rng.standard_normal(
        len(t)
    )
    return np.stack([mono, 0.8 * mono]).astype(np.float32)


def vorbis_ogg(path, audio, sampling_rate):
    """An Ogg Vorbis file (encode_audio writes .ogg as Opus; PyAV's wheels have no Vorbis encoder), by libsndfile."""
    import soundfile as sf

    sf.write(path, audio.T, sampling_rate, format="OGG", subtype="VORBIS")
    return path


def decoded_samples(path) -> np.ndarray:
    """Every decoded sample of the first audio stream, as the codec gives them (no resampling)."""
    import av

    with av.open(str(path)) as container:
        return np.concatenate(
            [frame.to_ndarray() for frame in container.decode(container.streams.audio[0])], axis=1
        )


def test_write_tags_dry_run_undo_on_every_format(model_dir, tmp_path, capsys):
    lib = tmp_path / "lib"
    files = {}
    for i, name in enumerate(["a.mp3", "b.flac", "c.opus", "d.m4a", "e.ogg", "plain.wav"]):
        files[name] = encode_audio(lib / name, music(seed=i), 44100)
    files["f_vorbis.ogg"] = vorbis_ogg(lib / "f_vorbis.ogg", music(seed=9), 44100)
    # Some files come with a genre of their own (two values in the flac), which --undo must bring back.
    replace_genre(files["a.mp3"], ["Old Rock"])
    replace_genre(files["b.flac"], ["Jazz", "Fusion"])
    replace_genre(files["d.m4a"], ["Podcast"])
    before_tags = {name: read_genre(path) for name, path in files.items() if name != "plain.wav"}
    before_samples = {name: decoded_samples(path) for name, path in files.items()}
    before_bytes = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
    db = tmp_path / "results.db"
    common = [
        str(lib),
        "--model",
        str(model_dir),
        "--output",
        str(db),
        "--workers",
        "0",
        "--backend",
        "torch",
        "--quiet",
    ]

    assert tag.main([*common, "--write_tags", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would tag") == 6 and "not tagged: " + str(files["plain.wav"]) in out
    assert {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()} == before_bytes

    assert tag.main([*common, "--write_tags"]) == 0
    out = capsys.readouterr().out
    assert "wrote 6" in out
    with __import__("sqlite3").connect(db) as reader:
        genres = dict(reader.execute("SELECT path, genre FROM songs"))
    for name, path in files.items():
        np.testing.assert_array_equal(
            decoded_samples(path), before_samples[name]
        )  # audio untouched, PyAV reads it
        if name != "plain.wav":
            assert read_genre(path) == [genres[str(path)]]
    assert hashlib.sha256(files["plain.wav"].read_bytes()).hexdigest() == before_bytes["plain.wav"]
    assert not list(lib.glob(".*.tagtmp"))
    log = [json.loads(line) for line in (tmp_path / "results.db.tags.jsonl").read_text().splitlines()]
    assert {r["path"]: r["old"] for r in log} == {str(files[n]): old for n, old in before_tags.items()}

    # Tags changed, audio not: a rerun analyses nothing, and writes nothing (the genres are already there).
    assert tag.main([*common, "--write_tags"]) == 0
    captured = capsys.readouterr()
    assert (
        "0 to analyse, 7 unchanged" in captured.err and "wrote 0, 6 already had their genre" in captured.out
    )

    assert tag.main(["--undo", str(tmp_path / "results.db.tags.jsonl")]) == 0
    assert "restored 6 files" in capsys.readouterr().out
    for name, path in files.items():
        if name != "plain.wav":
            assert read_genre(path) == before_tags[name], name
        np.testing.assert_array_equal(decoded_samples(path), before_samples[name])


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    from ast_dora.tagging import file_tags

    path = encode_audio(tmp_path / "x.mp3", music(), 44100)
    replace_genre(path, ["Before"])
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(file_tags.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        replace_genre(path, ["After"])
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tagtmp"))
