"""`python -m ast_dora.tag`: the walk (odd names, nesting, symlink loops, non-audio and broken files), the results
database, the rows against `GenreClassifier.analyse`, incremental reruns and a run killed with SIGKILL; on tiny
random-weight models and seconds of generated audio."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from song_fixtures import REPO_ROOT, save_tiny_model

from ast_dora import tag
from ast_dora.inference import GenreClassifier
from ast_dora.tagging.store import ResultsStore
from ast_dora.tagging.walk import LibraryFile, WalkProblem, walk_library

# Probabilities of a song batched with other songs' windows against the song alone: float32 matmuls over other
# batch shapes differ in the last bits.
ATOL = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag_models")
    return {kind: save_tiny_model(kind, root / kind) for kind in ("vit_hybrid", "ast_dora")}


def song(path: Path, seconds: float = 5.0, freq: float = 220.0, sampling_rate: int = 16000) -> Path:
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    rng = np.random.default_rng(int(freq))
    audio = 0.3 * np.sin(2 * np.pi * freq * t) * np.exp(-(t % 0.5)) + 0.02 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), sampling_rate, subtype="PCM_16", format="WAV")
    return path


def messy_library(root: Path) -> dict[str, Path]:
    """Nested folders, odd names, a wav without extension, a text file, a broken mp3, a symlink loop, a dangling link."""
    files = {
        "plain": song(root / "a.wav", freq=220),
        "deep": song(root / "one" / "two" / "three" / "four" / "deep.wav", 3.0, freq=330),
        "odd": song(root / "Ünïcode folder" / "-leading dash & spaces (live).wav", 4.0, freq=440),
        "quote": song(root / "one" / 'it\'s "quoted"; $HOME.wav', 3.0, freq=550),
        "no_extension": song(root / "one" / "no_extension", 3.0, freq=660),
    }
    (root / "one" / "cover.txt").write_text("not a song\n")
    (root / "two_broken.mp3").write_bytes(b"ID3" + b"\x00garbage" * 200)
    os.symlink(root / "one", root / "one" / "two" / "loop")  # leads back up: a loop
    os.symlink(root / "nowhere.wav", root / "dangling.wav")
    return files


def run_tag(*argv) -> int:
    return tag.main([str(a) for a in argv])


def rows_of(db: Path) -> dict[str, dict]:
    with ResultsStore(db, readonly=True) as store:
        return {row["path"]: row for row in store.rows()}


def test_walk_finds_every_file_once_and_reports_loops_and_dangling_links(tmp_path):
    files = messy_library(tmp_path / "lib")
    found = list(walk_library([tmp_path / "lib"]))
    paths = [f.path for f in found if isinstance(f, LibraryFile)]
    problems = {Path(p.path).name: p.reason for p in found if isinstance(p, WalkProblem)}
    assert sorted(paths) == sorted(
        {*map(str, files.values()), str(tmp_path / "lib/one/cover.txt"), str(tmp_path / "lib/two_broken.mp3")}
    )
    assert "symlink loop" in problems["loop"] and problems["dangling.wav"] == "dangling symlink"


def test_tag_rows_match_song_analysis_and_report_bad_files(models, tmp_path, capsys):
    files = messy_library(tmp_path / "lib")
    db = tmp_path / "results.db"
    assert (
        run_tag(
            tmp_path / "lib",
            "--model",
            models["vit_hybrid"],
            "--output",
            db,
            "--workers",
            "1",
            "--backend",
            "torch",
            "--quiet",
            "--export_parquet",
            tmp_path / "out.parquet",
        )
        == 1
    )  # a broken file
    out, err = capsys.readouterr()
    rows = rows_of(db)
    classifier = GenreClassifier.from_pretrained(models["vit_hybrid"], bf16=False)
    for path in map(str, files.values()):
        row, analysis = rows[path], classifier.analyse(path)
        assert row["status"] == "ok" and row["genre"] == analysis.genre and row["vote"] == analysis.vote
        np.testing.assert_allclose(list(row["probabilities"].values()), analysis.probabilities, atol=ATOL)
        assert row["duration"] == pytest.approx(analysis.duration)
        assert row["size"] == os.path.getsize(path) and row["mtime"] == os.path.getmtime(path)
        assert (
            row["weights_hash"]
            and row["model_id"] == str(models["vit_hybrid"].resolve())
            and row["seconds"] > 0
        )
    assert rows[str(tmp_path / "lib/one/cover.txt")]["status"] == "not_audio"
    broken = rows[str(tmp_path / "lib/two_broken.mp3")]
    assert broken["status"] == "error" and "Could not read two_broken.mp3 as audio" in broken["error"]
    assert "symlink loop" in err and "dangling symlink" in err and "two_broken.mp3" in err
    assert "5 songs" in out and "1 errors" in out and "1 other files skipped" in out
    assert (tmp_path / "results_genres.png").stat().st_size > 1000
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out.parquet").num_rows == 7


def test_ensemble_rows_match_the_ensemble_analysis(models, tmp_path):
    files = [song(tmp_path / "lib" / f"s{i}.wav", 4.0 + 3 * i, freq=200 + 90 * i) for i in range(3)]
    db = tmp_path / "results.db"
    assert (
        run_tag(
            tmp_path / "lib",
            "--model",
            models["vit_hybrid"],
            "--model",
            models["ast_dora"],
            "--ensemble",
            "--weights",
            "1",
            "3",
            "--output",
            db,
            "--workers",
            "0",
            "--backend",
            "torch",
            "--quiet",
        )
        == 0
    )
    rows = rows_of(db)
    both = GenreClassifier.ensemble(
        [GenreClassifier.from_pretrained(models[k], bf16=False) for k in ("vit_hybrid", "ast_dora")],
        weights=[1, 3],
    )
    for path in map(str, files):
        analysis = both.analyse(path)
        np.testing.assert_allclose(
            [rows[path]["probabilities"][g] for g in analysis.labels], analysis.probabilities, atol=ATOL
        )
        assert rows[path]["is_music"] == analysis.is_music
        assert rows[path]["music_probability"] == pytest.approx(analysis.music.music_probability, abs=ATOL)


def test_rerun_skips_unchanged_analyses_new_and_changed_and_marks_vanished(models, tmp_path, capsys):
    lib = tmp_path / "lib"
    files = [song(lib / f"s{i}.wav", 3.0, freq=200 + 50 * i) for i in range(4)]
    db = tmp_path / "results.db"
    args = [
        lib,
        "--model",
        models["vit_hybrid"],
        "--output",
        db,
        "--workers",
        "0",
        "--backend",
        "torch",
        "--quiet",
    ]
    assert run_tag(*args) == 0
    first = rows_of(db)
    capsys.readouterr()
    assert run_tag(*args) == 0
    assert "0 to analyse, 4 unchanged, 0 vanished" in capsys.readouterr().err
    song(files[1], 4.0, freq=900)  # changed
    files[2].unlink()  # vanished
    song(lib / "new" / "s9.wav", 3.0, freq=700)  # new
    assert run_tag(*args) == 0
    assert "2 to analyse, 2 unchanged, 1 vanished" in capsys.readouterr().err
    second = rows_of(db)
    assert str(files[2]) not in second and len(second) == 4
    with ResultsStore(db, readonly=True) as store:
        gone = [r for r in store.rows(include_vanished=True) if r["vanished_at"] is not None]
    assert [r["path"] for r in gone] == [str(files[2])]
    assert second[str(files[0])]["analysed_at"] == first[str(files[0])]["analysed_at"]  # not redone
    assert second[str(files[1])]["duration"] == pytest.approx(4.0, abs=0.01)
    # Another model adds its own rows beside the first's.
    assert (
        run_tag(
            lib,
            "--model",
            models["ast_dora"],
            "--output",
            db,
            "--workers",
            "0",
            "--backend",
            "torch",
            "--quiet",
        )
        == 0
    )
    with ResultsStore(db, readonly=True) as store:
        assert len(store.model_keys()) == 2


def test_a_killed_run_leaves_a_readable_file_and_a_rerun_loses_only_songs_in_flight(models, tmp_path):
    lib = tmp_path / "lib"
    count = 60
    for i in range(count):
        song(lib / f"d{i % 4}" / f"s{i:03d}.wav", 8.0, freq=150 + 7 * i)
    db = tmp_path / "results.db"
    command = [
        sys.executable,
        "-m",
        "ast_dora.tag",
        str(lib),
        "--model",
        str(models["vit_hybrid"]),
        "--output",
        str(db),
        "--workers",
        "1",
        "--backend",
        "torch",
        "--quiet",
        "--batch_size",
        "4",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    committed = 0
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as reader:
                    committed = reader.execute("SELECT count(*) FROM songs").fetchone()[0]
            except sqlite3.OperationalError:  # the writer is creating the table
                committed = 0
        if committed >= 5:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed: make the library larger"
    import psutil

    workers = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Its decode workers go too (they watch their parent), not left waiting for work forever.
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert workers and not alive, alive
    # Readable right after the kill, by a reader that does not recover anything (read-only).
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as reader:
        assert reader.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        survived = reader.execute("SELECT count(*) FROM songs WHERE status = 'ok'").fetchone()[0]
    assert 5 <= survived < count
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{count - survived} to analyse, {survived} unchanged" in result.stderr
    rows = rows_of(db)
    assert len(rows) == count and all(row["status"] == "ok" for row in rows.values())


def test_predict_names_a_folder_and_points_to_tag(models, tmp_path, capsys):
    from ast_dora import predict

    (tmp_path / "Music").mkdir()
    assert predict.main([str(tmp_path / "Music"), "--model", str(models["vit_hybrid"])]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "python -m ast_dora.tag" in err


def test_bad_arguments_are_refused_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_tag(tmp_path, "--output", tmp_path / "r.db")
    assert "--model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_tag(tmp_path, "--model", "m", "--output", tmp_path / "r.db", "--dry_run")
    assert "--dry_run goes with --write_tags" in capsys.readouterr().err


def test_without_ray_or_mutagen_one_line_names_the_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    monkeypatch.setitem(sys.modules, "mutagen", None)
    assert run_tag(tmp_path, "--model", "m", "--output", tmp_path / "out", "--ray", "auto") == 2
    assert 'pip install -e ".[cluster]"' in capsys.readouterr().err
    (tmp_path / "log.jsonl").write_text("")
    assert run_tag("--undo", tmp_path / "log.jsonl") == 2
    assert "pip install mutagen" in capsys.readouterr().err
