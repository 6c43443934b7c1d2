"""Worker processes after a native thread pool ran in this process: no fork then (`ast_dora/workers.py`).

The suite once died with SIGSEGV in a `datasets` map with two forked workers, after OpenVINO had run in the
pytest process. These tests run OpenVINO first, then every worker pool the project starts, in this process."""

import subprocess
import sys

import numpy as np
import pytest

from ast_dora.workers import FORK_UNSAFE_MODULES, datasets_start_method, fork_unsafe_runtimes, start_method


@pytest.fixture
def openvino_ran():
    """OpenVINO compiled and ran a small matmul here: its thread pool has been live in this process."""
    ov = pytest.importorskip("openvino")
    import openvino.opset13 as ops

    x = ops.parameter([64, 256], ov.Type.f32, name="x")
    w = ops.constant(np.ones((256, 256), np.float32))
    compiled = ov.Core().compile_model(ov.Model([ops.matmul(x, w, False, False)], [x], "pool"), "CPU")
    out = compiled.create_infer_request().infer({0: np.ones((64, 256), np.float32)})[0]
    assert float(out[0, 0]) == 256.0
    return compiled


def test_fork_only_while_no_fork_unsafe_runtime_is_loaded():
    code = (
        "import ast_dora.workers as w; a = w.start_method(); import {m}; "
        "print(a, w.start_method(), ','.join(w.fork_unsafe_runtimes()))"
    )
    for module in ("openvino", "onnxruntime"):
        pytest.importorskip(module)
        out = subprocess.run(
            [sys.executable, "-c", code.format(m=module)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert out == ["fork", "forkserver", module]
    assert set(fork_unsafe_runtimes()) <= set(FORK_UNSAFE_MODULES)


def test_datasets_map_with_workers_after_openvino(
    openvino_ran, synthetic_gtzan_folder, tmp_path, tiny_feature_extractor
):
    import multiprocess

    from ast_dora.data import DataArguments, build_datasets

    assert start_method() == "forkserver"
    before = multiprocess.get_start_method(allow_none=True)
    with datasets_start_method() as method:
        assert method == "forkserver" and multiprocess.get_start_method() == "forkserver"
    assert multiprocess.get_start_method(allow_none=True) == before  # the default is put back

    def build(workers, name):
        args = DataArguments(
            data_dir=str(synthetic_gtzan_folder),
            features_cache_dir=str(tmp_path / name),
            max_tracks_per_genre=2,
            preprocessing_num_workers=workers,
        )
        return build_datasets(args, tiny_feature_extractor, default_window=(2.0, 2.0)).datasets["train"]

    parallel, serial = build(2, "parallel"), build(None, "serial")
    assert len(parallel) == len(serial) > 0
    assert parallel["track_id"] == serial["track_id"]
    np.testing.assert_array_equal(np.asarray(parallel["input_values"]), np.asarray(serial["input_values"]))


def test_synthetic_generator_workers_after_openvino(openvino_ran, tmp_path):
    from ast_dora.data import generate_synthetic_gtzan

    parallel = generate_synthetic_gtzan(
        tmp_path / "p", tracks_per_genre=1, duration_seconds=1.0, num_workers=2
    )
    serial = generate_synthetic_gtzan(tmp_path / "s", tracks_per_genre=1, duration_seconds=1.0)
    assert [p.read_bytes() for p in parallel] == [p.read_bytes() for p in serial]


def test_dataloader_workers_after_openvino(openvino_ran, tmp_path):
    import torch
    from transformers import TrainingArguments

    from ast_dora.trainer import GenreTrainer

    data = [{"input_values": torch.full((4,), float(i)), "labels": i % 2} for i in range(8)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        dataloader_num_workers=2,
        per_device_eval_batch_size=4,
        report_to=[],
        remove_unused_columns=False,
    )
    trainer = GenreTrainer(model=torch.nn.Linear(4, 2), args=args)
    batches = list(trainer.get_eval_dataloader(data))
    assert args.dataloader_multiprocessing_context == "forkserver"
    assert torch.cat([b["input_values"][:, 0] for b in batches]).tolist() == [float(i) for i in range(8)]


def test_compiling_an_openvino_model_keeps_the_threads_signal_stack():
    """OpenVINO's CPU plugin replaces the compiling thread's alternate signal stack; a later signal (a child's
    SIGCHLD under torch's DataLoader handler) was then delivered on it and the process died with SIGSEGV
    (`ast_dora/signal_stack.py`). Each place the project compiles puts the stack back."""
    pytest.importorskip("openvino")
    from ast_dora.benchmarks.peak import measure_int8_matmul_peak
    from ast_dora.hardware import _probe_openvino
    from ast_dora.signal_stack import current_signal_stack

    before = current_signal_stack()
    if before is None:
        pytest.skip("no sigaltstack to read on this platform")
    _probe_openvino(threads=1, seconds=0.01)
    assert current_signal_stack() == before
    measure_int8_matmul_peak("openvino", (16, 32, 64), threads=1, seconds=0.01, repeats=1)
    assert current_signal_stack() == before
