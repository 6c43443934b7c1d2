"""`python -m ast_dora.bench train` at tiny size, and the matmul-peak measurement it divides by."""

import json
import time

import pytest
import torch

from ast_dora.bench import main
from ast_dora.benchmarks import peak


def test_peak_of_a_dtype_the_hardware_only_emulates_is_measured_on_one_call(monkeypatch):
    # bf16 on a CPU without native bf16 took minutes per 2048-square matmul; the peak must not wait for that.
    calls = []
    real_matmul = torch.matmul

    def slow_matmul(a, b, out=None):
        calls.append(a.shape[0])
        time.sleep(0.2)
        return real_matmul(a[:2, :2], b[:2, :2])

    monkeypatch.setattr(peak.torch, "matmul", slow_matmul)
    peaks = peak.measure_matmul_peak(("fp32",), seconds=0.3)
    assert calls == [1024]  # one call of the smallest size, no larger size tried
    assert 0 < peaks["fp32"] < 2 * 1024**3 / 0.2 / 1e12 * 1.01


def test_peak_of_a_fast_dtype_times_every_size(monkeypatch):
    sizes = []
    real_matmul = torch.matmul

    def counted_matmul(a, b, out=None):
        sizes.append(a.shape[0])
        return real_matmul(a, b, out=out)

    monkeypatch.setattr(peak.torch, "matmul", counted_matmul)
    peaks = peak.measure_matmul_peak(("fp32",), sizes=(128, 64), seconds=0.1, repeats=2)
    assert peaks["fp32"] > 0
    assert sorted(set(sizes)) == [64, 128] and sizes[0] == 64  # smallest first, both timed


@pytest.mark.parametrize("model_type", ["vit_hybrid", "ast_dora"])
def test_train_benchmark_writes_the_issue_keys(model_type, tmp_path, capsys):
    out = tmp_path / f"{model_type}.json"
    argv = [
        "train",
        "--model_type",
        model_type,
        "--size",
        "tiny",
        "--no_song",
        "--no_bf16",
        "--peak_seconds",
        "0.2",
        "--json",
        str(out),
    ]
    argv += ["--steps", "2", "--batch_size", "4"] if model_type == "vit_hybrid" else ["--samples", "8"]
    main(argv)
    written = json.loads(out.read_text())
    for key in ("samples_per_s", "mfu", "peak_bf16_tflops", "peak_fp32_tflops"):
        assert written[key] > 0, key
    assert written["mfu_against"] == "fp32" and written["mfu"] < 1.5  # tiny models are far from any peak
    if model_type == "ast_dora":
        assert written["cache_speedup"] > 0
        assert written["loss_max_rel_diff_cached_vs_uncached"] < 1e-3
    assert "MFU" in capsys.readouterr().out


def test_train_benchmark_reports_the_precision_auto_chose(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AST_DORA_BF16_PROBE", "slower")  # the probe's answer, forced (hardware.py)
    out = tmp_path / "auto.json"
    main(
        [
            "train",
            "--model_type",
            "vit_hybrid",
            "--size",
            "tiny",
            "--no_song",
            "--peak_seconds",
            "0.2",
            "--steps",
            "2",
            "--batch_size",
            "4",
            "--json",
            str(out),
        ]
    )
    written = json.loads(out.read_text())
    assert written["precision"] == "fp32" and written["bf16"] is False and written["mfu_against"] == "fp32"
    assert written["precision_choice"] == "auto: the CPU's bf16 is not faster than fp32 (forced)"
    assert written["bf16_probe"]["source"] == "forced"
    assert "precision fp32: auto: the CPU's bf16 is not faster" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_int8_peak_is_the_backends_own_int8_matmul(backend):
    pytest.importorskip("onnxruntime" if backend == "onnx" else "openvino")
    measured = peak.measure_int8_matmul_peak(backend, (64, 128, 512), threads=1, seconds=0.05, repeats=1)
    assert measured["tops"] > 0 and measured["shape"] == [64, 128, 512] and measured["threads"] == 1
    if backend == "openvino":  # the CPU plugin must run the FakeQuantize-MatMul pattern as an int8 kernel
        assert "FullyConnected u8" in measured["kernel"] or "FullyConnected i8" in measured["kernel"], (
            measured
        )
    with pytest.raises(ValueError, match="int8 peak is measured for"):
        peak.measure_int8_matmul_peak("torch")
