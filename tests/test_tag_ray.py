"""`python -m ast_dora.tag --ray`: the Ray Data pipeline on a local Ray instance (`ray.init(num_cpus=2)`) tags 20
files with the same rows as the one-machine run."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import require_installed
from song_fixtures import save_tiny_model
from test_tag import rows_of, song

from ast_dora import tag

# The same windows through the same model, in other batches: float32 matmuls differ in the last bits.
ATOL = 1e-5


@pytest.fixture(scope="module")
def local_ray():
    # The dev extra installs ray, so CI runs this test; elsewhere a machine without it skips with the install line.
    require_installed(importlib.util.find_spec("ray") is not None, "ray", 'pip install -e ".[cluster]"')
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_run_equals_the_local_run(local_ray, tmp_path, capsys):
    model = save_tiny_model("vit_hybrid", tmp_path / "model")
    lib = tmp_path / "lib"
    for i in range(19):
        song(lib / f"d{i % 3}" / f"s{i:02d}.wav", 2.0 + (i % 4), freq=150 + 37 * i)
    (lib / "broken.mp3").write_bytes(b"not audio at all" * 50)  # the 20th file: an error row in both runs
    common = ["--model", str(model), "--backend", "torch", "--quiet", "--chart", "none"]
    assert tag.main([str(lib), *common, "--output", str(tmp_path / "local.db"), "--workers", "1"]) == 1
    assert tag.main([str(lib), *common, "--output", str(tmp_path / "ray_out"), "--ray", "auto"]) == 1
    assert "19 songs" in capsys.readouterr().out

    from ast_dora.tagging.ray_pipeline import read_rows

    local = rows_of(tmp_path / "local.db")
    remote = {row["path"]: row for row in read_rows(tmp_path / "ray_out")}
    assert sorted(remote) == sorted(local) and len(remote) == 20
    for path, row in local.items():
        other = remote[path]
        for key in (
            "model_key",
            "model_id",
            "weights_hash",
            "size",
            "mtime",
            "status",
            "genre",
            "vote",
            "is_music",
        ):
            assert other[key] == row[key], (path, key)
        if row["status"] == "ok":
            assert other["duration"] == pytest.approx(row["duration"])
            np.testing.assert_allclose(
                [other["probabilities"][g] for g in row["probabilities"]],
                list(row["probabilities"].values()),
                atol=ATOL,
            )
        else:
            assert other["error"] == row["error"]
