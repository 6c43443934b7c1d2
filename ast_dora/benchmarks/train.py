"""Training speed: samples/s and model-FLOPs utilisation (MFU) against this machine's measured matmul peak.

Measures the bf16 and fp32 matmul peak (`peak.py`) in this process before and after the model timings (the
higher of the two counts: on a shared machine either may be the quieter moment), and trains the real default-size
model through the project's `Trainer` setup (`GenreTrainingArguments`: bf16 autocast, fused AdamW, gradient
clipping, the LR schedule) on synthetic inputs - no data set needed - and reports

- `samples_per_s`: steady-state training throughput (wall time between optimizer steps after `--warmup`
  steps, data loading included),
- `mfu`: analytic training FLOPs per sample x samples/s / the measured matmul peak of the precision trained in
  (`--bf16 auto`, the default, as the configs' `bf16: auto`: bf16 where a measured probe finds it faster than
  fp32, `hardware.py`; reported as `precision`, `precision_choice` and the probe's figures `bf16_probe`).
  Training FLOPs count the matmuls - patch projection, attention projections, attention scores and values,
  FFN, head - forward, plus their backward: 2x forward for trained weights (the ViT-hybrid: 3x forward in
  all), and for AST-DoRA only what runs: no backward below `min_layer`, input gradients only (1x) through
  the frozen weights above it, the adapters' own tiny matmuls not counted;
- `peak_memory_mb`: peak GPU memory allocated (CUDA) or the process's peak RSS (CPU);
- AST-DoRA also: one epoch of `--samples` windows through the frozen layers and one from the frozen-prefix
  cache, both in this run, `cache_speedup` = uncached epoch time / cached epoch time, the time to build the
  cache, and the largest relative difference between the two runs' per-step losses;
- unless `--no_song`: the inference latency of a 3-minute song (the `song` benchmark, same model size).

    python -m ast_dora.bench train --model_type vit_hybrid --json /tmp/bench_vit.json
    python -m ast_dora.bench train --model_type ast_dora --json /tmp/bench_ast.json
    python -m ast_dora.bench train --model_type vit_hybrid --plain_loop   # a bare PyTorch loop, for comparison
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import resource
import shutil
import tempfile
import time

import torch

from ..models import get_model_spec, model_types
from .flops import ast_dora_flops, vit_hybrid_flops
from .peak import measure_matmul_peak


def add_arguments(parser) -> None:
    parser.add_argument("--model_type", choices=model_types(), default=model_types()[0])
    parser.add_argument(
        "--size",
        choices=("default", "tiny"),
        default="default",
        help="default: the real architecture (25.4 M ViT-hybrid; AudioSet-sized AST). tiny: for tests.",
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="Per-step batch (default: the model's, vit_hybrid 64, ast_dora 8).",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="Timed steps (vit_hybrid default 8; ast_dora: one epoch of --samples windows).",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="Untimed steps first (vit_hybrid 2, ast_dora 1)."
    )
    parser.add_argument("--samples", type=int, default=32, help="ast_dora: windows per epoch (default 32).")
    parser.add_argument(
        "--min_layer", type=int, default=10, help="ast_dora: first adapted layer (default 10)."
    )
    parser.add_argument(
        "--bf16",
        default="auto",
        help="auto (default: bf16 where a measured bf16-vs-fp32 matmul probe finds it faster, as the "
        "configs' `bf16: auto`), true or false. MFU is against the chosen precision's peak.",
    )
    parser.add_argument("--no_bf16", action="store_true", help="Train in fp32 (= --bf16 false).")
    parser.add_argument(
        "--optim", default="adamw_torch_fused", help="TrainingArguments.optim (default fused AdamW)."
    )
    parser.add_argument("--torch_compile", action="store_true", help="TrainingArguments.torch_compile.")
    parser.add_argument(
        "--plain_loop",
        action="store_true",
        help="vit_hybrid: time a bare PyTorch loop (autocast, torch.optim.AdamW) instead of the Trainer.",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, = cores)."
    )
    parser.add_argument("--no_song", action="store_true", help="Skip the 3-min song latency.")
    parser.add_argument("--peak_seconds", type=float, default=1.0, help="Seconds per matmul-peak timing.")


# ----------------------------------------------------------------------------------------------------------
# Timing through the Trainer
# ----------------------------------------------------------------------------------------------------------


class SyntheticWindows(torch.utils.data.Dataset):
    """`length` rows cycling over a small pool of random inputs (no data set, no per-step generation cost).

    `signal` > 0 makes the labels learnable: each input is its class's fixed random pattern (drawn from
    `pattern_seed`) times `signal` plus unit noise (from `seed`), so a model that trains correctly drives its loss
    down, on other samples of the same classes too (another `seed`, the same `pattern_seed`).
    """

    def __init__(
        self,
        shape,
        num_labels: int,
        length: int,
        pool: int = 16,
        seed: int = 0,
        signal: float = 0.0,
        pattern_seed: int = 0,
    ):
        generator = torch.Generator().manual_seed(seed)
        self.inputs = torch.randn(pool, *shape, generator=generator)
        self.labels = torch.randint(0, num_labels, (pool,), generator=generator)
        if signal:
            patterns = torch.randn(num_labels, *shape, generator=torch.Generator().manual_seed(pattern_seed))
            self.inputs += signal * patterns[self.labels]
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        return {
            "input_values": self.inputs[i % len(self.inputs)],
            "labels": self.labels[i % len(self.labels)],
        }


class CycledRows(torch.utils.data.Dataset):
    """`length` rows cycling over the rows of `rows` (any indexable data set, e.g. a cached `datasets.Dataset`),
    in the same order as `SyntheticWindows` cycles over its pool."""

    def __init__(self, rows, length: int):
        self.rows = rows
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        return self.rows[i % len(self.rows)]

    def __getitems__(self, indices):
        # The DataLoader fetches a whole batch through this when it exists, as it does from a `datasets.Dataset`
        # in training (one Arrow gather per batch instead of one read per row).
        rows = [i % len(self.rows) for i in indices]
        getitems = getattr(self.rows, "__getitems__", None)
        return getitems(rows) if getitems is not None else [self.rows[i] for i in rows]


def _training_args(args, output_dir: str, max_steps: int, batch_size: int, logging_steps: int | None = None):
    from ..config import GenreTrainingArguments

    return GenreTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        max_steps=max_steps,
        learning_rate=1e-4,
        warmup_steps=0,
        optim=args.optim,
        bf16=not args.no_bf16,
        torch_compile=args.torch_compile,
        logging_strategy="steps" if logging_steps else "no",
        logging_steps=logging_steps or 500,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )


def _step_times_callback(sync_at_steps=()):
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        """Wall time at the end of each optimizer step (and of a checkpoint save). On CUDA the clock is read after
        a device sync at `sync_at_steps` only: kernels run asynchronously, so the ends of the timed span must
        wait for the GPU, while a sync every step would stall the queue the Trainer keeps full."""

        def __init__(self):
            self.times = []
            self.save_times = []

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in sync_at_steps and torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

        def on_save(self, args, state, control, **kwargs):
            self.save_times.append(time.perf_counter())

    return StepTimes()


def train_and_time(model, dataset, training_args, warmup: int, data_collator=None, eval_dataset=None) -> dict:
    """Train `training_args.max_steps` steps with the `Trainer`; throughput over the steps after `warmup`.

    Returns `samples_per_s`, `step_s`, `losses` (every logged step loss, in order), `log_steps` (their steps),
    `peak_memory_mb` (CUDA allocator, None on CPU), `save_s` (the last checkpoint save, when the args save one)
    and, with `eval_dataset`, `eval_loss_before` / `eval_loss` (before and after training: eval mode, so without
    dropout noise) and `eval_samples_per_s` (the second of two passes after training: the first warms up).
    """
    from transformers import PrinterCallback, Trainer

    steps = training_args.max_steps
    callback = _step_times_callback(sync_at_steps={max(warmup, 1), steps})
    batch_size = training_args.per_device_train_batch_size
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=data_collator,
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # the table says it all
    loss_before = trainer.evaluate(eval_dataset)["eval_loss"] if eval_dataset is not None else None
    trainer.train()
    times = callback.times[warmup - 1 :] if warmup > 0 else callback.times
    seconds = times[-1] - times[0]
    timed_steps = len(times) - 1
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    result = {
        "samples_per_s": timed_steps * batch_size / seconds,
        "step_s": seconds / timed_steps,
        "losses": [entry["loss"] for entry in logged],
        "log_steps": [entry["step"] for entry in logged],
        "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }
    if callback.save_times:
        result["save_s"] = callback.save_times[-1] - callback.times[-1]
    if eval_dataset is not None:
        for _ in range(2):
            metrics = trainer.evaluate(eval_dataset)
        result.update(
            eval_samples_per_s=metrics["eval_samples_per_second"],
            eval_loss=metrics["eval_loss"],
            eval_loss_before=loss_before,
        )
    return result


def time_trainer(
    model, dataset, args, batch_size: int, steps: int, data_collator=None, log_losses=False
) -> dict:
    """Train `warmup + steps` steps with the Trainer; throughput over the last `steps` (and step losses)."""
    output_dir = tempfile.mkdtemp(prefix="bench_train_")
    try:
        training_args = _training_args(
            args, output_dir, args.warmup + steps, batch_size, logging_steps=1 if log_losses else None
        )
        return train_and_time(model, dataset, training_args, args.warmup, data_collator=data_collator)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def time_plain_loop(model, dataset, args, batch_size: int, steps: int) -> dict:
    """The baseline of issue #7: autocast bf16, `torch.optim.AdamW` defaults, nothing else."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    batches = iter(loader)
    for _ in range(args.warmup + steps):
        batch = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.no_bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter())
    times = times[args.warmup - 1 :] if args.warmup > 0 else times
    seconds = times[-1] - times[0]
    return {"samples_per_s": (len(times) - 1) * batch_size / seconds, "step_s": seconds / (len(times) - 1)}


# ----------------------------------------------------------------------------------------------------------
# The two models
# ----------------------------------------------------------------------------------------------------------


def _model_arguments(args):
    from ..config import ModelArguments

    return ModelArguments(model_type=args.model_type, min_layer=args.min_layer)


def bench_trainer(args, spec) -> dict:
    """A model trained in full (every weight trains: 3x forward FLOPs)."""
    from transformers import set_seed

    from ..data import GTZAN_GENRES
    from ..models.factory import use_fastest_attention

    batch_size = args.batch_size or spec.bench_batch_size
    steps = args.steps or 8
    set_seed(0)
    model = spec.random_model(_model_arguments(args), args.size, list(GTZAN_GENRES))
    config = model.config
    # The kernel finetune/run.py would pick for this device and precision.
    use_fastest_attention(model, "cuda" if torch.cuda.is_available() else "cpu", bf16=not args.no_bf16)
    dataset = SyntheticWindows(
        (config.num_channels, *config.image_size),
        config.num_labels,
        length=batch_size * (args.warmup + steps),
    )
    if args.plain_loop:
        timing = time_plain_loop(model, dataset, args, batch_size, steps)
    else:
        timing = time_trainer(model, dataset, args, batch_size, steps)
    flops = vit_hybrid_flops(config)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": batch_size,
        "timed_steps": steps,
        "loop": "plain" if args.plain_loop else "trainer",
        "attn_implementation": model.config._attn_implementation,
        "samples_per_s": timing["samples_per_s"],
        "step_s": timing["step_s"],
        "forward_gflops_per_sample": flops["forward"] / 1e9,
        "train_gflops_per_sample": flops["train"] / 1e9,
        "achieved_tflops": flops["train"] * timing["samples_per_s"] / 1e12,
    }


def prefix_min_layer(min_layer: int, size: str) -> int:
    """The first adapted layer of a random prefix-cache model of `size` (the tiny stand-in adapts from layer 2)."""
    return min(min_layer, 2) if size == "tiny" else min_layer


def build_prefix_cache(
    model, windows, min_layer: int, bf16: bool, batch_size: int, cache_dir: str | None = None
):
    """Check `model` takes cached prefix inputs at `min_layer`, move it to the training device and cache `windows`' hidden states
    entering `min_layer` (in `cache_dir`, as training writes them, or in memory without one).

    Returns `(cached_windows, seconds)`: the cached rows (what `collate_prefix_batch` collates) and the build time.
    """
    from ..prefix_cache import cache_prefix_hidden_states, set_prefix_layer

    set_prefix_layer(model, min_layer)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    cached_windows, _ = cache_prefix_hidden_states(
        model,
        windows,
        min_layer,
        bf16=bf16,
        batch_size=batch_size,
        cache_dir=cache_dir,
        use_cache=cache_dir is not None,
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return cached_windows, time.perf_counter() - start


def loss_max_rel_diff(losses, reference) -> float:
    """The largest relative difference between two runs' step losses (same steps, same order)."""
    return max(abs(a - b) / abs(b) for a, b in zip(losses, reference, strict=True))


def bench_with_prefix_cache(args, spec) -> dict:
    """A model with a frozen prefix: one epoch through the frozen layers, one from the frozen-prefix cache."""
    from datasets import Dataset
    from transformers import set_seed

    from ..data import GTZAN_GENRES
    from ..models import base_model_of
    from ..prefix_cache import collate_prefix_batch

    batch_size = args.batch_size or spec.bench_batch_size
    steps = args.steps or max(1, args.samples // batch_size)
    labels = list(GTZAN_GENRES)
    set_seed(0)
    model_args = _model_arguments(args)
    model = spec.random_model(model_args, args.size, labels)
    cached_model = copy.deepcopy(model)  # the same initial adapters and head for both runs
    config = base_model_of(model).config
    min_layer = prefix_min_layer(args.min_layer, args.size)
    classifier_hidden_size = config.classifier_hidden_size
    n = batch_size * (args.warmup + steps)
    generator = torch.Generator().manual_seed(0)
    windows = Dataset.from_dict(
        {
            "input_values": torch.randn(
                n, config.max_length, config.num_mel_bins, generator=generator
            ).numpy(),
            "labels": torch.randint(0, len(labels), (n,), generator=generator).tolist(),
        }
    ).with_format("torch")

    uncached = time_trainer(model, windows, args, batch_size, steps, log_losses=True)
    cached_windows, cache_build_s = build_prefix_cache(
        cached_model, windows, min_layer, bf16=not args.no_bf16, batch_size=batch_size
    )
    cached = time_trainer(
        cached_model,
        cached_windows,
        args,
        batch_size,
        steps,
        data_collator=collate_prefix_batch,
        log_losses=True,
    )

    flops = ast_dora_flops(config, min_layer, classifier_hidden_size, len(labels))
    epoch_uncached = args.samples / uncached["samples_per_s"]
    epoch_cached = args.samples / cached["samples_per_s"]
    loss_diff = loss_max_rel_diff(uncached["losses"], cached["losses"])
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "min_layer": min_layer,
        "num_hidden_layers": config.num_hidden_layers,
        "tokens": flops["tokens"],
        "batch_size": batch_size,
        "timed_steps": steps,
        "loop": "trainer",
        "samples_per_s": cached["samples_per_s"],
        "samples_per_s_uncached": uncached["samples_per_s"],
        "epoch_samples": args.samples,
        "epoch_s_cached": epoch_cached,
        "epoch_s_uncached": epoch_uncached,
        "cache_speedup": epoch_uncached / epoch_cached,
        "cache_build_s": cache_build_s,
        "cache_build_per_sample_s": cache_build_s / n,
        "loss_max_rel_diff_cached_vs_uncached": loss_diff,
        "forward_gflops_per_sample_uncached": flops["forward_uncached"] / 1e9,
        "forward_gflops_per_sample_cached": flops["forward_cached"] / 1e9,
        "train_gflops_per_sample_uncached": flops["train_uncached"] / 1e9,
        "train_gflops_per_sample_cached": flops["train_cached"] / 1e9,
        "achieved_tflops": flops["train_cached"] * cached["samples_per_s"] / 1e12,
        "achieved_tflops_uncached": flops["train_uncached"] * uncached["samples_per_s"] / 1e12,
    }


def _song_latency(model_type: str, threads: int | None, no_bf16: bool) -> dict:
    from . import song

    # The song benchmark's own parser, so its defaults stay the single source of truth.
    parser = argparse.ArgumentParser()
    song.add_arguments(parser)
    argv = ["--model_type", model_type, "--runs", "3", "--warmup", "1"]
    argv += ["--no_bf16"] if no_bf16 else []
    argv += ["--threads", str(threads)] if threads else []
    song_args = parser.parse_args(argv)
    result = song.run(song_args)
    return {
        "song_latency_s": result["latency_s"],
        "song_seconds": result["song_seconds"],
        "song_x_realtime": result["x_realtime"],
    }


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_model_spec(args.model_type)
    if args.warmup is None:
        args.warmup = 1 if spec.prefix_cache else 2
    for name in (__package__.split(".")[0], "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)  # keep the table readable
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    # The precision training would choose here (`config.resolve_training_bf16`); every path below follows it.
    from ..config import bf16_setting, resolve_training_bf16

    choice = resolve_training_bf16(
        False if args.no_bf16 else bf16_setting(args.bf16), not torch.cuda.is_available()
    )
    args.no_bf16 = not choice["bf16"]
    load_before = os.getloadavg()
    peak_before = measure_matmul_peak(("bf16", "fp32"), seconds=args.peak_seconds)
    start = time.perf_counter()
    result = bench_with_prefix_cache(args, spec) if spec.prefix_cache else bench_trainer(args, spec)
    bench_seconds = time.perf_counter() - start
    # Measured again after the model timings: on a shared machine either can be the quieter moment, and the
    # higher peak is the stricter denominator.
    peak_after = measure_matmul_peak(("bf16", "fp32"), seconds=args.peak_seconds)
    peak = {name: max(peak_before[name], peak_after[name]) for name in peak_before}
    peak_used = peak["fp32"] if args.no_bf16 else peak["bf16"]
    for key in [k for k in result if k.startswith("achieved_tflops")]:
        result[key.replace("achieved_tflops", "mfu")] = result[key] / peak_used
    peak_memory = (
        torch.cuda.max_memory_allocated()
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ) / 2**20
    results = {
        "benchmark": "train",
        "model_type": args.model_type,
        "size": args.size,
        **result,
        "peak_bf16_tflops": peak["bf16"],
        "peak_fp32_tflops": peak["fp32"],
        "peak_before": peak_before,
        "peak_after": peak_after,
        "model_timing_s": bench_seconds,
        "mfu_against": "fp32" if args.no_bf16 else "bf16",
        "bf16": not args.no_bf16,
        "precision": "bf16" if choice["bf16"] else "fp32",
        "precision_choice": choice["reason"],
        "bf16_probe": choice["probe"],
        "optim": args.optim if not args.plain_loop else "torch.optim.AdamW",
        "torch_compile": args.torch_compile,
        "peak_memory_mb": peak_memory,
        "peak_memory_kind": "cuda_max_allocated" if torch.cuda.is_available() else "process_peak_rss",
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "torch": torch.__version__,
    }
    if not args.no_song:
        results.update(_song_latency(args.model_type, args.threads, args.no_bf16))
    print(format_table(results))
    return results


def format_table(r: dict) -> str:
    lines = [
        f"train benchmark: {r['model_type']} ({r['size']}, {r['parameters'] / 1e6:.1f} M parameters), batch "
        f"{r['batch_size']}, {r['loop']} loop, bf16={r['bf16']}, optim {r['optim']}, compile={r['torch_compile']}",
        f"  matmul peak (best of before/after): bf16 {r['peak_bf16_tflops']:.2f} TFLOP/s, fp32 "
        f"{r['peak_fp32_tflops']:.2f} TFLOP/s "
        f"({r['torch_threads']} threads, {r['cpu_count']} cores, {r['cpu_capability']}, load average "
        f"{r['load_average_before'][0]:.2f} -> {r['load_average_after'][0]:.2f})",
        f"  precision {r['precision']}: {r['precision_choice']}",
    ]
    head = f"  {'path':<22}{'samples/s':>10}{'GFLOP/sample':>14}{'TFLOP/s':>9}{'MFU':>7}"
    lines += [head, "  " + "-" * (len(head) - 2)]
    cached = "samples_per_s_uncached" in r
    if not cached:
        rows = [("train", r["samples_per_s"], r["train_gflops_per_sample"], r["achieved_tflops"], r["mfu"])]
    else:
        rows = [
            (
                "through frozen layers",
                r["samples_per_s_uncached"],
                r["train_gflops_per_sample_uncached"],
                r["achieved_tflops_uncached"],
                r["mfu_uncached"],
            ),
            (
                "from prefix cache",
                r["samples_per_s"],
                r["train_gflops_per_sample_cached"],
                r["achieved_tflops"],
                r["mfu"],
            ),
        ]
    for name, sps, gflops, tflops, mfu in rows:
        lines.append(f"  {name:<22}{sps:>10.2f}{gflops:>14.1f}{tflops:>9.3f}{mfu:>7.1%}")
    if cached:
        lines.append(
            f"  epoch of {r['epoch_samples']} windows: {r['epoch_s_uncached']:.1f} s through layers 0-"
            f"{r['num_hidden_layers'] - 1}, {r['epoch_s_cached']:.1f} s from the cache (layers >= {r['min_layer']}) "
            f"-> cache_speedup {r['cache_speedup']:.2f}x; cache built in {r['cache_build_s']:.1f} s; "
            f"step losses agree within {r['loss_max_rel_diff_cached_vs_uncached']:.1e} (relative)"
        )
    memory = "peak GPU memory" if r["peak_memory_kind"] == "cuda_max_allocated" else "peak RSS"
    line = f"  {memory} {r['peak_memory_mb']:.0f} MB"
    if "song_latency_s" in r:
        line += f"; 3-min song inference latency {r['song_latency_s']:.2f} s ({r['song_x_realtime']:.0f}x real time)"
    lines.append(line)
    return "\n".join(lines)
