"""GPU check: one command showing that the real configs train correctly and fast on a CUDA device.

    python -m ast_dora.bench gpu --json gpu.json    # one CUDA GPU, real sizes (<= 8 minutes on an H100 / H200)
    python -m ast_dora.bench gpu --tiny             # anywhere, CPU included (CI runs it): tiny sizes, same steps

Steps, in order, each timed; a step that fails is reported with its error and the others still run:

- `matmul peak`: the device's bf16 and fp32 matmul peak (`peak.py`), the denominator of every MFU below.
- `<model_type> training`, for each registered model with `gpu_check` settings. The model has random weights
  and the settings of `configs/<model_type>.yaml` (read with `parse_config`: precision, optimizer, loss, LR
  schedule, seed), and trains through the `Trainer` on synthetic inputs of the real shape:
  - a model trained in full (ViT-hybrid): learnable inputs (class patterns plus noise) at the config's batch,
    long enough for the evaluation loss to fall (checked), then at the largest of the larger batches that fits
    (CUDA out-of-memory is caught and the next size tried);
  - a model with a frozen prefix (AST-DoRA): through all layers and from the frozen-prefix cache at each batch;
    the two paths' step losses agree within `PREFIX_LOSS_RTOL`; the cache build rate (written to disk).
  Both report samples/s, MFU, evaluation samples/s and the time to save a checkpoint.
- `lean DoRA`: the lean DoRA forward (`models/fused_dora.py`; on CPU its folded variant) gives peft's logits, loss
  and gradients on the device, in bf16 and fp32.
- `resume`: a run saves a checkpoint at step k and goes on; a second run resumes from that checkpoint (no kill);
  the loss of step k+1 is the same (`RESUME_RTOL`).
- `data loader`: windows per second of the `Trainer`'s train loader (the config's `dataloader_num_workers`) over
  a few thousand feature windows stored as the feature cache stores them (Arrow, same schema, memory-mapped).
- `<model_type> song`: `GenreClassifier.analyse` of a 3-minute song on the device (in-memory waveform at the
  model's rate: no decoding, no resampling), and which code computed the features.
- `projection`: wall time of each full recipe (epochs from the config, windows from the spec's recipe tracks)
  from the measured rates: train steps at the slower of model and data loader, validation every epoch, a
  checkpoint save every epoch, and the frozen-prefix cache build.

Model timings read batches in the training process (`dataloader_num_workers` 0) from a pool of windows in
memory (from the cached Arrow rows for the frozen-prefix path), so they time the model and the collation; the
`data loader` step times what the config's workers deliver, and the projection takes the slower of the two.
Targets (`ModelSpec.gpu_check`) are reported beside the steps for the default sizes on CUDA; they are not part
of passing.

Imports: torch, transformers, peft, accelerate, datasets and numpy (and what they import themselves when it is
installed); no Gradio, Optuna, scikit-learn, scipy, torchaudio, torchcodec or soundfile is needed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import logging
import os
import platform
import shutil
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..models import base_model_of, get_model_spec, model_types
from .peak import measure_matmul_peak

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
# The two paths differ by the cached hidden states' bf16 rounding (relative 2^-9 per element); with bf16 autocast
# the matmuls round at that level anyway (tests/test_prefix_cache.py states the same bound for one step).
PREFIX_LOSS_RTOL = 1e-2
# The resumed run starts from the saved weights, optimizer, scheduler and RNG states: only float rounding may differ.
RESUME_RTOL = 1e-5
# Lean DoRA vs peft, as in tests/test_ast_dora.py: bf16 rounds the same ops in another order.
DORA_TOLERANCE = {True: dict(atol=2e-2, rtol=2e-2, grad=5e-2), False: dict(atol=1e-5, rtol=1e-4, grad=1e-4)}
CLIP_SECONDS = 30.0  # a GTZAN clip


@dataclasses.dataclass(frozen=True)
class Sizes:
    model_size: str  # the registry's random_model size
    batch_divisor: int  # the specs' batch sizes are divided by this (at least 2)
    peak_seconds: float  # per matmul-peak timing
    warmup: int  # untimed steps first
    loss_steps: int  # steps of the loss curve (a fully trained model at its first batch)
    # "The loss falls": the evaluation loss after `loss_steps` (eval mode: no dropout or SpecAugment noise) below
    # this fraction of the one before training. Tiny models learn little in a few steps at the config's LR.
    loss_fall: float
    timed_steps: int  # timed steps at the other batches, and per path of a frozen-prefix model
    logging_steps: int  # loss-curve logging interval
    pool: int  # distinct synthetic windows
    eval_batches: int  # batches per evaluation pass
    resume_step: int  # k: the checkpoint step of the resume check
    loader_windows: int  # windows written for the data-loader step, per model
    loader_batches: int  # batches read per loader timing
    song_seconds: float
    song_runs: int


# Sized for <= 8 minutes on one H100 / H200 with warm-up: every training run is seconds there (an AST-base step
# through all layers at batch 32 is ~8 TFLOP: ~30 ms at 35% MFU of ~790 TFLOP/s); most of the time goes to
# building the models on the CPU, writing the Arrow files and the songs.
DEFAULT = Sizes(
    model_size="default",
    batch_divisor=1,
    peak_seconds=1.0,
    warmup=3,
    loss_steps=100,
    loss_fall=0.8,
    timed_steps=20,
    logging_steps=10,
    pool=128,
    eval_batches=10,
    resume_step=3,
    loader_windows=2048,
    loader_batches=48,
    song_seconds=180.0,
    song_runs=5,
)
TINY = Sizes(
    model_size="tiny",
    batch_divisor=8,
    peak_seconds=0.2,
    warmup=1,
    loss_steps=32,
    loss_fall=0.995,
    timed_steps=3,
    logging_steps=4,
    pool=8,
    eval_batches=2,
    resume_step=2,
    loader_windows=96,
    loader_batches=6,
    song_seconds=20.0,
    song_runs=1,
)


class Check:
    """What the steps share: sizes, device, precision, the measured peak, the rates the projection reads, and one
    random model per model type (built once on the CPU; each step trains a copy)."""

    def __init__(self, sizes: Sizes, device: torch.device, config_dir: Path):
        from ..hardware import cpu_has_fast_bf16

        self.sizes = sizes
        self.device = device
        self.config_dir = Path(config_dir)
        # The configs ask for bf16; it is kept where the device computes it natively (elsewhere it is emulated, far
        # slower than fp32: docs/training.md, "Speed and scale").
        self.bf16_native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_fast_bf16()
        self.specs = [get_model_spec(t) for t in model_types() if get_model_spec(t).gpu_check is not None]
        self.peak: dict[str, float] | None = None
        self.rates: dict[str, dict] = {
            spec.name: {"train": {}, "eval": {}, "loader": {}} for spec in self.specs
        }
        self.figures: dict[str, dict] = {spec.name: {} for spec in self.specs}
        self._workdir: Path | None = None
        self._models: dict[str, torch.nn.Module] = {}
        self._inputs: dict[str, tuple] = {}

    @property
    def workdir(self) -> Path:
        """A temporary folder for checkpoints and Arrow files, removed by `close`."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        return self._workdir

    def close(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # ---- configs and models ----

    def run_config(
        self,
        spec,
        output_dir,
        batch_size: int = 8,
        max_steps: int = 1,
        logging_steps: int | None = None,
        save_steps: int | None = None,
        in_process_loading: bool = True,
    ):
        """The model's config file with what a timed run changes: batch, steps, logging, saving, loader workers."""
        from ..config import parse_config

        argv = [
            "--config",
            str(self.config_dir / f"{spec.name}.yaml"),
            "--output_dir",
            str(output_dir),
            "--overwrite_output_dir",
            "true",
            "--per_device_train_batch_size",
            str(batch_size),
            "--max_steps",
            str(max_steps),
            "--eval_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
            "--save_strategy",
            "steps" if save_steps else "no",
            "--save_steps",
            str(save_steps or max_steps),
            "--logging_strategy",
            "steps" if logging_steps else "no",
            "--logging_steps",
            str(logging_steps or 1),
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
            # Timed at the per-step batch: one batch per optimizer step.
            "--gradient_accumulation_steps",
            "1",
        ]
        if in_process_loading:
            argv += ["--dataloader_num_workers", "0"]
        if not self.bf16_native:
            argv += ["--bf16", "false"]
        return parse_config(argv)

    def labels(self) -> list[str]:
        from ..data import GTZAN_GENRES

        return list(GTZAN_GENRES)

    def initial_model(self, spec) -> torch.nn.Module:
        """A copy of the model type's random model (seed 0, the config's model settings)."""
        if spec.name not in self._models:
            from transformers import set_seed

            set_seed(0)
            model_args = self.run_config(spec, self.workdir / "config").model
            self._models[spec.name] = spec.random_model(model_args, self.sizes.model_size, self.labels())
        return copy.deepcopy(self._models[spec.name])

    def input_feature(self, spec):
        """(datasets feature type, shape) of one window's `input_values`, from the model's feature extractor."""
        if spec.name not in self._inputs:
            from ..data.features import probe_feature_type
            from ..data.windows import seconds_to_samples

            extractor = spec.default_feature_extractor()
            rate = int(extractor.sampling_rate)
            self._inputs[spec.name] = probe_feature_type(
                extractor, seconds_to_samples(spec.window_seconds, rate), rate
            )
        return self._inputs[spec.name]

    def batch_groups(self, spec) -> list[tuple[int, ...]]:
        divisor = self.sizes.batch_divisor
        return [tuple(max(2, size // divisor) for size in group) for group in spec.gpu_check.batch_sizes]

    def mfu(self, tflops: float, bf16: bool) -> float | None:
        if not self.peak:
            return None
        return tflops / self.peak["bf16" if bf16 else "fp32"]

    def output_dir(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}_", dir=self.workdir))

    def free_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _oom_errors() -> tuple[type[BaseException], ...]:
    return (torch.cuda.OutOfMemoryError,)


def _synthetic(ctx: Check, spec, length: int, seed: int = 0, signal: float = 0.0):
    from .train import SyntheticWindows

    _, shape = ctx.input_feature(spec)
    return SyntheticWindows(shape, len(ctx.labels()), length, pool=ctx.sizes.pool, seed=seed, signal=signal)


def _fmt_rate(value) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _fmt_mfu(value) -> str:
    return "-" if value is None else f"{value:.0%}" if value >= 0.1 else f"{value:.1%}"


# --------------------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------------------


def step_peak(ctx: Check) -> dict:
    ctx.peak = measure_matmul_peak(("bf16", "fp32"), seconds=ctx.sizes.peak_seconds, device=ctx.device)
    return {
        "bf16_tflops": ctx.peak["bf16"],
        "fp32_tflops": ctx.peak["fp32"],
        "summary": f"bf16 {ctx.peak['bf16']:.2f} TFLOP/s, fp32 {ctx.peak['fp32']:.2f} TFLOP/s",
    }


def _first_fitting(group, attempt: Callable[[int], dict], ctx: Check, oom: list[int]) -> dict | None:
    """`attempt(batch)` for each size of `group` until one fits in device memory; None if none does."""
    for batch in group:
        try:
            return attempt(batch)
        except _oom_errors():
            oom.append(batch)
        ctx.free_memory()  # after the except block: the error's frames, and the tensors they hold, are gone
    return None


def _fitting_batches(ctx: Check, spec, attempt: Callable[[int, bool], dict], oom: list[int], checks: dict):
    """(group index, `attempt`'s result) for each of the spec's batch groups, at its first size that fits in device
    memory (the first group's attempt is the one with the loss curve); a group where none fits is a failed check."""
    for index, group in enumerate(ctx.batch_groups(spec)):
        result = _first_fitting(group, lambda batch, first=index == 0: attempt(batch, first), ctx, oom)
        if result is None:
            checks[f"a batch of {' or '.join(map(str, group))} fits in memory"] = False
            continue
        yield index, result


def step_full_training(ctx: Check, spec) -> dict:
    """A model whose every weight trains: the loss curve at the first batch, then the larger batches."""
    from ..models.factory import use_fastest_attention
    from .flops import forward_flops
    from .train import train_and_time

    sizes = ctx.sizes
    runs, oom, checks = [], [], {}
    train_flops = None
    first: dict = {}  # the loss-curve run (first batch group), with the evaluation figures

    def attempt(batch: int, first: bool) -> dict:
        nonlocal train_flops
        steps = sizes.loss_steps if first else sizes.warmup + sizes.timed_steps
        run = ctx.run_config(
            spec,
            ctx.output_dir("train"),
            batch,
            steps,
            logging_steps=sizes.logging_steps if first else None,
            save_steps=steps if first else None,
        )
        model = ctx.initial_model(spec)
        use_fastest_attention(model, ctx.device, bf16=run.training.bf16)
        train_flops = 3 * forward_flops(model)  # forward, plus backward through activations and weights
        # Other samples of the same classes (same patterns, other noise and labels).
        eval_set = (
            _synthetic(
                ctx, spec, run.training.per_device_eval_batch_size * sizes.eval_batches, seed=1, signal=1.0
            )
            if first
            else None
        )
        timing = train_and_time(
            model,
            _synthetic(ctx, spec, batch * steps, signal=1.0),
            run.training,
            sizes.warmup,
            eval_dataset=eval_set,
        )
        tflops = train_flops * timing["samples_per_s"] / 1e12
        timing.update(
            batch=batch,
            bf16=run.training.bf16,
            achieved_tflops=tflops,
            mfu=ctx.mfu(tflops, run.training.bf16),
            optim=str(run.training.optim.value),
            attn_implementation=base_model_of(model).config._attn_implementation,
            loss_function=getattr(base_model_of(model).config, "loss", None),
        )
        return timing

    for index, timing in _fitting_batches(ctx, spec, attempt, oom, checks):
        runs.append(timing)
        ctx.rates[spec.name]["train"].setdefault("full", {})[timing["batch"]] = timing["samples_per_s"]
        if index == 0:
            first = timing
            before, after = timing["eval_loss_before"], timing["eval_loss"]
            checks[
                f"evaluation loss falls below {sizes.loss_fall:g} x its start ({before:.4f} -> {after:.4f} in "
                f"{timing['log_steps'][-1]} steps)"
            ] = after < sizes.loss_fall * before
            ctx.rates[spec.name]["eval"]["full"] = timing["eval_samples_per_s"]
            ctx.rates[spec.name]["save_s"] = timing.get("save_s", 0.0)
    summary = "; ".join(
        f"batch {r['batch']}: {_fmt_rate(r['samples_per_s'])} samples/s, MFU {_fmt_mfu(r['mfu'])}"
        for r in runs
    )
    if first:
        summary = (
            f"eval loss {first['eval_loss_before']:.3f} -> {first['eval_loss']:.3f} in "
            f"{first['log_steps'][-1]} steps; "
            + summary
            + f"; eval {_fmt_rate(first['eval_samples_per_s'])} samples/s; "
            f"checkpoint {first.get('save_s', 0):.2f} s"
        )
    if oom:
        summary += f"; out of memory at batch {', '.join(map(str, oom))}"
    ctx.figures[spec.name]["best_mfu"] = max((r["mfu"] for r in runs if r["mfu"] is not None), default=None)
    return {
        "model_type": spec.name,
        "train_gflops_per_sample": train_flops / 1e9 if train_flops else None,
        "bf16": first.get("bf16"),
        "optim": first.get("optim"),
        "loss_function": first.get("loss_function"),
        "attn_implementation": first.get("attn_implementation"),
        "eval_loss_before": first.get("eval_loss_before"),
        "eval_loss": first.get("eval_loss"),
        "loss_fall": sizes.loss_fall,
        "losses": first.get("losses"),
        "loss_steps": first.get("log_steps"),
        "eval_samples_per_s": first.get("eval_samples_per_s"),
        "checkpoint_save_s": first.get("save_s"),
        "runs": [
            {
                k: r[k]
                for k in ("batch", "samples_per_s", "step_s", "achieved_tflops", "mfu", "peak_memory_mb")
            }
            for r in runs
        ],
        "oom_batches": oom,
        "checks": checks,
        "summary": summary,
    }


def step_prefix_training(ctx: Check, spec) -> dict:
    """A model with a frozen prefix: each batch through all layers and from the frozen-prefix cache."""
    from datasets import Dataset, Features, Value

    from ..prefix_cache import collate_prefix_batch
    from .flops import ast_dora_flops
    from .train import CycledRows, build_prefix_cache, loss_max_rel_diff, prefix_min_layer, train_and_time

    sizes = ctx.sizes
    labels = ctx.labels()
    model_args = ctx.run_config(spec, ctx.output_dir("config")).model
    min_layer = prefix_min_layer(model_args.min_layer, sizes.model_size)
    initial = ctx.initial_model(spec)
    config = base_model_of(initial).config
    feature, _ = ctx.input_feature(spec)
    pool = _synthetic(ctx, spec, sizes.pool)
    pool_windows = Dataset.from_dict(
        {"input_values": pool.inputs.numpy(), "labels": pool.labels.tolist()},
        features=Features({"input_values": feature, "labels": Value("int64")}),
    ).with_format("torch")
    # Cached once, as training does: the prefix is frozen, so every copy of the model computes the same states.
    template = copy.deepcopy(initial)
    eval_batch = ctx.run_config(spec, ctx.output_dir("config")).training.per_device_eval_batch_size
    cached_rows, build_s = build_prefix_cache(
        template,
        pool_windows,
        min_layer,
        bf16=ctx.bf16_native,
        batch_size=eval_batch,
        cache_dir=str(ctx.output_dir("prefix_cache")),
    )
    flops = ast_dora_flops(config, min_layer, config.classifier_hidden_size, len(labels))
    runs, oom, checks = [], [], {}

    def attempt(batch: int, first: bool) -> dict:
        steps = sizes.warmup + sizes.timed_steps
        timings = {}
        for path, make_model, rows, collator, train_flops in (
            ("through all layers", lambda: copy.deepcopy(initial), None, None, flops["train_uncached"]),
            (
                "from cache",
                lambda: copy.deepcopy(template),
                cached_rows,
                collate_prefix_batch,
                flops["train_cached"],
            ),
        ):
            run = ctx.run_config(
                spec,
                ctx.output_dir("train"),
                batch,
                steps,
                logging_steps=1,
                save_steps=steps if first else None,
            )
            n_eval = run.training.per_device_eval_batch_size * sizes.eval_batches
            if rows is None:
                dataset, eval_set = _synthetic(ctx, spec, batch * steps), _synthetic(ctx, spec, n_eval)
            else:
                dataset, eval_set = CycledRows(rows, batch * steps), CycledRows(rows, n_eval)
            timing = train_and_time(
                make_model(),
                dataset,
                run.training,
                sizes.warmup,
                data_collator=collator,
                eval_dataset=eval_set if first else None,
            )
            tflops = train_flops * timing["samples_per_s"] / 1e12
            timing.update(
                batch=batch,
                path=path,
                bf16=run.training.bf16,
                achieved_tflops=tflops,
                mfu=ctx.mfu(tflops, run.training.bf16),
            )
            timings[path] = timing
            ctx.free_memory()
        return timings

    for index, timings in _fitting_batches(ctx, spec, attempt, oom, checks):
        uncached, cached = timings["through all layers"], timings["from cache"]
        difference = loss_max_rel_diff(cached["losses"], uncached["losses"])
        checks[
            f"batch {uncached['batch']}: cached and uncached step losses agree within {PREFIX_LOSS_RTOL:g} "
            f"(largest relative difference {difference:.1e})"
        ] = difference <= PREFIX_LOSS_RTOL
        for timing in (uncached, cached):
            timing["loss_max_rel_diff"] = difference
            runs.append(timing)
            ctx.rates[spec.name]["train"].setdefault(timing["path"], {})[timing["batch"]] = timing[
                "samples_per_s"
            ]
            if index == 0:
                ctx.rates[spec.name]["eval"][timing["path"]] = timing["eval_samples_per_s"]
        if index == 0:
            ctx.rates[spec.name]["save_s"] = cached.get("save_s", 0.0)
    ctx.rates[spec.name]["cache_build_windows_per_s"] = sizes.pool / build_s
    uncached_mfus = [r["mfu"] for r in runs if r["path"] == "through all layers" and r["mfu"] is not None]
    ctx.figures[spec.name]["best_mfu"] = uncached_mfus[-1] if uncached_mfus else None
    summary = "; ".join(
        f"batch {r['batch']} {r['path']}: {_fmt_rate(r['samples_per_s'])} samples/s, MFU {_fmt_mfu(r['mfu'])}"
        for r in runs
    )
    summary += f"; cache built at {_fmt_rate(sizes.pool / build_s)} windows/s"
    if runs:
        summary += f"; losses agree within {max(r['loss_max_rel_diff'] for r in runs):.1e}"
    if oom:
        summary += f"; out of memory at batch {', '.join(map(str, oom))}"
    return {
        "model_type": spec.name,
        "min_layer": min_layer,
        "num_hidden_layers": config.num_hidden_layers,
        "tokens": flops["tokens"],
        "train_gflops_per_sample_uncached": flops["train_uncached"] / 1e9,
        "train_gflops_per_sample_cached": flops["train_cached"] / 1e9,
        "bf16": runs[0]["bf16"] if runs else None,
        "cache_windows": sizes.pool,
        "cache_build_s": build_s,
        "cache_build_windows_per_s": sizes.pool / build_s,
        "loss_rtol": PREFIX_LOSS_RTOL,
        "eval_samples_per_s": {path: rate for path, rate in ctx.rates[spec.name]["eval"].items()},
        "checkpoint_save_s": ctx.rates[spec.name].get("save_s"),
        "runs": [
            {
                k: r[k]
                for k in (
                    "batch",
                    "path",
                    "samples_per_s",
                    "step_s",
                    "achieved_tflops",
                    "mfu",
                    "peak_memory_mb",
                    "loss_max_rel_diff",
                    "losses",
                )
            }
            for r in runs
        ],
        "oom_batches": oom,
        "checks": checks,
        "summary": summary,
    }


def _perturb_trainable(model: torch.nn.Module, seed: int = 0) -> None:
    """DoRA starts as the identity (lora_B = 0): give the adapters weights, so that a wrong forward shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator).to(parameter.device))


@contextlib.contextmanager
def _no_tf32():
    """fp32 at fp32 precision on CUDA: TF32 (cuDNN's default for convolutions) would round both paths at 1e-3."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def step_lean_dora(ctx: Check) -> dict:
    with _no_tf32():
        return _compare_lean_dora(ctx)


def _compare_lean_dora(ctx: Check) -> dict:
    from peft.tuners.lora import Linear as LoraLinear

    checks, compared = {}, []
    for spec in ctx.specs:
        lean = ctx.initial_model(spec)
        patched = [m for m in lean.modules() if isinstance(m, LoraLinear) and "forward" in vars(m)]
        if not patched:
            continue
        _perturb_trainable(lean)
        reference = copy.deepcopy(lean)
        for module in reference.modules():
            if isinstance(module, LoraLinear) and "forward" in vars(module):
                del module.forward  # back to peft's own
        lean.to(ctx.device).train()
        reference.to(ctx.device).train()
        _, shape = ctx.input_feature(spec)
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randn(2, *shape, generator=generator).to(ctx.device)
        labels = torch.tensor([0, 3]).to(ctx.device)
        for bf16 in (True, False) if ctx.bf16_native else (False,):
            outputs = []
            for model in (lean, reference):
                model.zero_grad(set_to_none=True)
                torch.manual_seed(1)  # the same dropout masks in the head
                with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=bf16):
                    output = model(input_values=inputs, labels=labels)
                output.loss.backward()
                grads = {n: p.grad.detach().float() for n, p in model.named_parameters() if p.requires_grad}
                outputs.append((output.logits.detach().float(), output.loss.detach().float(), grads))
            (logits, loss, grads), (ref_logits, ref_loss, ref_grads) = outputs
            tolerance = DORA_TOLERANCE[bf16]
            logits_diff = float((logits - ref_logits).abs().max())
            logits_ok = bool(
                torch.allclose(logits, ref_logits, atol=tolerance["atol"], rtol=tolerance["rtol"])
            )
            loss_ok = bool(torch.allclose(loss, ref_loss, atol=tolerance["atol"], rtol=tolerance["rtol"]))
            grad_diff = max(
                float((grads[n] - ref_grads[n]).abs().max() / ref_grads[n].abs().max().clamp_min(1e-12))
                for n in ref_grads
            )
            precision = "bf16" if bf16 else "fp32"
            checks[
                f"{spec.name} {precision}: logits within atol {tolerance['atol']:g} / rtol {tolerance['rtol']:g} "
                f"(largest difference {logits_diff:.1e})"
            ] = logits_ok and loss_ok
            checks[
                f"{spec.name} {precision}: gradients within {tolerance['grad']:g} of the largest "
                f"(largest relative difference {grad_diff:.1e})"
            ] = grads.keys() == ref_grads.keys() and grad_diff < tolerance["grad"]
            compared.append(
                {
                    "model_type": spec.name,
                    "precision": precision,
                    "logits_max_abs_diff": logits_diff,
                    "logits_max_abs": float(ref_logits.abs().max()),
                    "grads_max_rel_diff": grad_diff,
                    "dora_linears": len(patched),
                }
            )
        del lean, reference
    if not compared:
        checks["a registered model has lean DoRA linears"] = False
    # On CPU the lean forward folds the adapters into the weight; on a GPU it runs the unfolded lean forward.
    path = "folded (CPU)" if ctx.device.type == "cpu" else "lean"
    return {
        "dora_path": path,
        "comparisons": compared,
        "checks": checks,
        "summary": f"{path} forward vs peft: "
        + ", ".join(
            f"{c['precision']} logits {c['logits_max_abs_diff']:.1e}, grads {c['grads_max_rel_diff']:.1e}"
            for c in compared
        ),
    }


def step_resume(ctx: Check) -> dict:
    """Save at step k and go on; resume a second run from that checkpoint; compare the loss of step k+1 (the
    default model type: its dropout, DropPath and SpecAugment draw from the random state the checkpoint restores)."""
    from transformers import PrinterCallback, Trainer, set_seed

    from ..models.factory import use_fastest_attention

    spec = ctx.specs[0]
    k = ctx.sizes.resume_step
    total = k + 2
    batch = ctx.batch_groups(spec)[0][0]
    dataset = _synthetic(ctx, spec, batch * total, signal=1.0)
    losses, checkpoint = [], None
    for resume in (False, True):
        output_dir = ctx.output_dir("resume")
        run = ctx.run_config(
            spec, output_dir, batch, total, logging_steps=1, save_steps=None if resume else k
        )
        run.training.save_total_limit = (
            None  # the config's limit could rotate checkpoint-k away before it is used
        )
        if resume:
            # Other initial weights than the first run's: only a checkpoint that really loads gives its loss.
            set_seed(1)
            model = spec.random_model(run.model, ctx.sizes.model_size, ctx.labels())
        else:
            model = ctx.initial_model(spec)
        use_fastest_attention(model, ctx.device, bf16=run.training.bf16)
        trainer = Trainer(model=model, args=run.training, train_dataset=dataset)
        trainer.remove_callback(PrinterCallback)
        if resume:
            trainer.train(resume_from_checkpoint=str(checkpoint))
        else:
            trainer.train()
            checkpoint = output_dir / f"checkpoint-{k}"
        losses.append(
            {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
        )
        del trainer, model
        ctx.free_memory()
    uninterrupted, resumed = losses
    difference = abs(resumed[k + 1] - uninterrupted[k + 1]) / abs(uninterrupted[k + 1])
    next_difference = abs(resumed[k + 2] - uninterrupted[k + 2]) / abs(uninterrupted[k + 2])
    checks = {
        f"checkpoint-{k} saved": checkpoint is not None and checkpoint.is_dir(),
        f"step {k + 1} loss after resuming within {RESUME_RTOL:g} (relative difference {difference:.1e})": difference
        <= RESUME_RTOL,
    }
    return {
        "model_type": spec.name,
        "checkpoint_step": k,
        "loss_uninterrupted": uninterrupted[k + 1],
        "loss_resumed": resumed[k + 1],
        "rel_diff": difference,
        "next_step_rel_diff": next_difference,
        "rtol": RESUME_RTOL,
        "checks": checks,
        "summary": f"{spec.name} batch {batch}: step {k + 1} loss {uninterrupted[k + 1]:.4f} uninterrupted, "
        f"{resumed[k + 1]:.4f} resumed from checkpoint-{k} (difference {difference:.1e}; step {k + 2}: "
        f"{next_difference:.1e})",
    }


def _write_feature_windows(ctx: Check, spec, count: int):
    """`count` random feature windows in an Arrow file with the feature cache's schema (`window_features`), the
    split formatted as `build_datasets` formats it."""
    import numpy as np
    from datasets import ClassLabel, Dataset

    from ..data.features import SUMMARY_COLUMNS, window_features

    feature, shape = ctx.input_feature(spec)
    labels = ctx.labels()
    features = window_features(ClassLabel(names=labels), feature)

    def fill(batch):
        index = np.asarray(batch["index"])
        rng = np.random.default_rng([0, int(index[0])])
        return {
            "input_values": rng.standard_normal((len(index), *shape), dtype=np.float32),
            "labels": (index % len(labels)).tolist(),
            "track_id": [f"{labels[i % len(labels)]}.{i // len(labels):05d}" for i in index],
            "window_start": [0.0] * len(index),
            "track_seconds": [CLIP_SECONDS] * len(index),
            "source_sampling_rate": [22050] * len(index),
            "source_channels": [1] * len(index),
        }

    windows = Dataset.from_dict({"index": list(range(count))}).map(
        fill,
        batched=True,
        batch_size=64,
        writer_batch_size=64,
        remove_columns=["index"],
        features=features,
        cache_file_name=str(ctx.output_dir("features") / f"features-{spec.name}.arrow"),
        new_fingerprint=f"gpu-check-{spec.name}-{count}",
    )
    return windows.remove_columns(list(SUMMARY_COLUMNS)).with_format(
        "torch", columns=["input_values", "labels"], output_all_columns=True
    )


def step_data_loader(ctx: Check) -> dict:
    from transformers import Trainer

    sizes = ctx.sizes
    rows, parts = [], []
    for spec in ctx.specs:
        windows = _write_feature_windows(ctx, spec, sizes.loader_windows)
        model = None
        # The batches training was timed at (the projection pairs them), or the first of each group without them.
        timed = {batch for by_batch in ctx.rates[spec.name]["train"].values() for batch in by_batch}
        for batch in sorted(timed or {group[0] for group in ctx.batch_groups(spec)}):
            run = ctx.run_config(spec, ctx.output_dir("loader"), batch, in_process_loading=False)
            if model is None:
                model = spec.random_model(
                    run.model, "tiny", ctx.labels()
                )  # only its forward signature is used
            trainer = Trainer(
                model=model,
                args=run.training,
                train_dataset=windows,
                processing_class=spec.default_feature_extractor(),
            )
            loader = trainer.get_train_dataloader()
            start = time.perf_counter()
            first_batch_s, read, timed_from = None, 0, None
            for i, inputs in enumerate(loader):
                inputs["input_values"].to(ctx.device, non_blocking=True)
                if ctx.device.type == "cuda":
                    torch.cuda.synchronize()
                if i == 0:  # the workers' start-up is not the steady rate
                    first_batch_s, timed_from = time.perf_counter() - start, time.perf_counter()
                else:
                    read += len(inputs["labels"])
                if i + 1 >= sizes.loader_batches:
                    break
            seconds = time.perf_counter() - timed_from
            rate = read / seconds if read else None
            ctx.rates[spec.name]["loader"][batch] = rate
            rows.append(
                {
                    "model_type": spec.name,
                    "batch": batch,
                    "windows_per_s": rate,
                    "first_batch_s": first_batch_s,
                    "num_workers": run.training.dataloader_num_workers,
                    "batches": i + 1,
                }
            )
            parts.append(f"{spec.name} batch {batch}: {_fmt_rate(rate)} windows/s")
            del loader, trainer
        del windows
    return {
        "windows_per_model": sizes.loader_windows,
        "num_workers": rows[0]["num_workers"] if rows else None,
        "runs": rows,
        "summary": f"{rows[0]['num_workers'] if rows else '?'} workers; " + "; ".join(parts),
    }


def step_song(ctx: Check, spec) -> dict:
    from ..inference import GenreClassifier
    from .song import song_waveform, time_song_analysis

    model = spec.for_inference(ctx.initial_model(spec)).eval()
    classifier = GenreClassifier(model, spec.default_feature_extractor(), device=ctx.device)
    audio = song_waveform(ctx.sizes.song_seconds, classifier.sampling_rate)
    timing = time_song_analysis(
        classifier, audio, ctx.sizes.song_runs, warmup=1, sampling_rate=classifier.sampling_rate
    )
    ctx.figures[spec.name]["song_latency_s"] = timing["latency_s"]
    ctx.figures[spec.name]["song_seconds"] = timing["song_seconds"]
    return {
        "model_type": spec.name,
        "song_seconds": timing["song_seconds"],
        "windows": timing["windows"],
        "batch_size": classifier.batch_size,
        "bf16": classifier.bf16,
        "features": classifier.features_implementation,
        "latency_s": timing["latency_s"],
        "latencies_s": timing["latencies_s"],
        "decode_s": timing["decode_s"],
        "features_s": timing["features_s"],
        "model_s": timing["model_s"],
        "summary": f"{timing['song_seconds']:.0f}-s song: {timing['latency_s']:.3f} s (features "
        f"{timing['features_s']:.3f} s by {classifier.features_implementation}, model {timing['model_s']:.3f} s)",
    }


def step_projection(ctx: Check) -> dict:
    """Wall time of each full recipe from the measured rates (see the module docstring for what it counts)."""
    from ..data.windows import seconds_to_samples, window_starts

    rows, checks = [], {}
    for spec in ctx.specs:
        rates = ctx.rates[spec.name]
        if not rates["train"]:
            checks[f"{spec.name}: training rates measured (its training step failed)"] = False
            continue
        run = ctx.run_config(spec, ctx.output_dir("config"))
        epochs = run.training.num_train_epochs
        rate = int(spec.default_feature_extractor().sampling_rate)
        per_clip = len(
            window_starts(
                seconds_to_samples(CLIP_SECONDS, rate),
                seconds_to_samples(spec.window_seconds, rate),
                seconds_to_samples(spec.hop_seconds, rate),
            )
        )
        train_windows, eval_windows = (tracks * per_clip for tracks in spec.gpu_check.recipe_tracks)
        for path, by_batch in rates["train"].items():
            reads_cache = path == "from cache"  # its measured rate already includes reading the cached rows
            for batch, model_rate in sorted(by_batch.items()):
                loader_rate = None if reads_cache else rates["loader"].get(batch)
                train_rate = min(model_rate, loader_rate) if loader_rate else model_rate
                eval_rate = rates["eval"].get(path) or model_rate
                eval_loader_rate = (
                    None if reads_cache else rates["loader"].get(run.training.per_device_eval_batch_size)
                )
                eval_rate = min(eval_rate, eval_loader_rate) if eval_loader_rate else eval_rate
                epoch_s = train_windows / train_rate + eval_windows / eval_rate + rates.get("save_s", 0.0)
                build_s = (
                    (train_windows + eval_windows) / rates["cache_build_windows_per_s"]
                    if reads_cache
                    else 0.0
                )
                total_s = epochs * epoch_s + build_s
                rows.append(
                    {
                        "model_type": spec.name,
                        "path": path,
                        "batch": batch,
                        "epochs": epochs,
                        "train_windows_per_epoch": train_windows,
                        "eval_windows_per_epoch": eval_windows,
                        "model_samples_per_s": model_rate,
                        "loader_windows_per_s": loader_rate,
                        "limited_by": "data" if loader_rate and loader_rate < model_rate else "model",
                        "cache_build_s": build_s,
                        "epoch_s": epoch_s,
                        "total_minutes": total_s / 60,
                    }
                )
    for row in rows:
        ctx.figures[row["model_type"]].setdefault("recipe_minutes", {})[(row["path"], row["batch"])] = row[
            "total_minutes"
        ]
    if not rows and not checks:
        checks["a model to project"] = False
    return {
        "rows": rows,
        "counts": "train steps at the slower of model and data loader, a validation pass and a checkpoint save per "
        "epoch, the frozen-prefix cache build; not the final test pass or model loading",
        "checks": checks,
        "summary": "; ".join(
            f"{r['model_type']} {r['path']} batch {r['batch']}: {r['epochs']:g} epochs x {r['train_windows_per_epoch']} "
            f"windows -> {r['total_minutes']:.1f} min ({r['limited_by']}-bound)"
            for r in rows
        ),
    }


def targets(ctx: Check) -> list[dict]:
    """The issue's targets for the default sizes on an H100 / H200 (`ModelSpec.gpu_check`)."""
    found = []
    for spec in ctx.specs:
        settings, figures = spec.gpu_check, ctx.figures[spec.name]
        if settings.mfu_target is not None:
            found.append(
                {
                    "name": f"{spec.name} training MFU at the largest batch (through all layers)",
                    "value": figures.get("best_mfu"),
                    "target": settings.mfu_target,
                    "at_least": True,
                }
            )
        if settings.recipe_minutes_target is not None:
            projected = figures.get("recipe_minutes", {})
            first_batch = ctx.batch_groups(spec)[0][0]
            value = next((m for (path, batch), m in projected.items() if batch == first_batch), None)
            found.append(
                {
                    "name": f"{spec.name} full recipe at batch {first_batch}, minutes",
                    "value": value,
                    "target": settings.recipe_minutes_target,
                    "at_least": False,
                }
            )
        if settings.song_latency_target_s is not None:
            found.append(
                {
                    "name": f"{spec.name} song latency, s per {figures.get('song_seconds', 0):.0f}-s song",
                    "value": figures.get("song_latency_s"),
                    "target": settings.song_latency_target_s,
                    "at_least": False,
                }
            )
    for target in found:
        value = target["value"]
        target["met"] = (
            None
            if value is None
            else (value >= target["target"] if target["at_least"] else value <= target["target"])
        )
    return found


# --------------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="Tiny models, batches and data: the same steps in about a minute on a CPU (CI).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's, = cores; with --tiny: 1, as tiny models gain nothing "
        "from more and on a shared CPU OpenMP threads spin waiting for each other, many times slower).",
    )
    parser.add_argument(
        "--config_dir",
        default=str(CONFIG_DIR),
        help="Folder of the <model_type>.yaml configs whose settings are checked (default: configs/).",
    )


def _run_step(ctx: Check, name: str, step: Callable[[], dict]) -> dict:
    start = time.perf_counter()
    try:
        figures = step()
        checks = figures.get("checks", {})
        failed = [description for description, passed in checks.items() if not passed]
        entry = {"name": name, "ok": not failed, "seconds": time.perf_counter() - start, **figures}
        if failed:
            entry["error"] = "failed: " + "; ".join(failed)
    except Exception as error:  # a failed step is reported and the others still run
        entry = {
            "name": name,
            "ok": False,
            "seconds": time.perf_counter() - start,
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(limit=-8).splitlines()[-30:],
        }
    ctx.free_memory()
    return entry


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return f"{names[0]} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor() or "cpu"


@contextlib.contextmanager
def _quiet():
    """Library logs, progress bars and deprecation notices off while the table prints; restored afterwards."""
    import datasets
    from transformers.utils import logging as transformers_logging

    loggers = [logging.getLogger(name) for name in (__package__.split(".")[0], "transformers", "datasets")]
    levels = [logger.level for logger in loggers]
    bars = datasets.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' notices of what changes in v6
            # peft, saving the adapter of a model whose base checkpoint was a temporary folder (random weights)
            warnings.filterwarnings("ignore", message="Could not find a config file")
            # transformers' numpy fbank (AST features without torchaudio): kaldi's bank has an empty lowest filter
            warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            transformers_logging.enable_progress_bar()


def run(args) -> dict:
    threads = torch.get_num_threads()
    if args.threads or args.tiny:
        torch.set_num_threads(args.threads or 1)
    try:
        with _quiet():
            return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> dict:
    import datasets
    import transformers

    sizes = TINY if args.tiny else DEFAULT
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.tiny:
        raise SystemExit(
            "No CUDA device found: the GPU check at real sizes needs one. On this machine run "
            "`python -m ast_dora.bench gpu --tiny` (the same steps at tiny sizes)."
        )
    ctx = Check(sizes, device, Path(args.config_dir))
    steps: list[tuple[str, Callable[[], dict]]] = [("matmul peak", lambda: step_peak(ctx))]
    for spec in ctx.specs:
        train = step_prefix_training if spec.prefix_cache else step_full_training
        steps.append((f"{spec.name} training", lambda spec=spec, train=train: train(ctx, spec)))
    steps += [
        ("lean DoRA", lambda: step_lean_dora(ctx)),
        ("resume", lambda: step_resume(ctx)),
        ("data loader", lambda: step_data_loader(ctx)),
    ]
    steps += [(f"{spec.name} song", lambda spec=spec: step_song(ctx, spec)) for spec in ctx.specs]
    steps.append(("projection", lambda: step_projection(ctx)))

    started = time.perf_counter()
    header = (
        f"GPU check on {_device_name(device)}: {sizes.model_size} sizes, bf16={ctx.bf16_native}, torch "
        f"{torch.__version__}, transformers {transformers.__version__}"
    )
    print(header, flush=True)
    print(f"  {'step':<22}{'ok':<6}{'s':>7}  figures", flush=True)
    results = []
    try:
        for name, step in steps:
            entry = _run_step(ctx, name, step)
            results.append(entry)
            print(_format_row(entry), flush=True)
    finally:
        ctx.close()
    found = targets(ctx)
    result = {
        "benchmark": "gpu",
        "device": _device_name(device),
        "size": sizes.model_size,
        "peak_bf16_tflops": ctx.peak["bf16"] if ctx.peak else None,
        "peak_fp32_tflops": ctx.peak["fp32"] if ctx.peak else None,
        "bf16": ctx.bf16_native,
        "all_ok": all(entry["ok"] for entry in results),
        "steps": results,
        "targets": found,
        "targets_apply": device.type == "cuda" and not args.tiny,
        "total_seconds": time.perf_counter() - started,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    print(_format_footer(result), flush=True)
    return result


def _format_row(entry: dict) -> str:
    ok = "ok" if entry["ok"] else "FAIL"
    text = entry.get("summary", "") if entry["ok"] else entry.get("error", "")
    if not entry["ok"] and entry.get("summary"):
        text = f"{entry['error']} | {entry['summary']}"
    return f"  {entry['name']:<22}{ok:<6}{entry['seconds']:>7.1f}  {text}"


def _format_footer(result: dict) -> str:
    failed = [entry["name"] for entry in result["steps"] if not entry["ok"]]
    lines = [
        f"  {'all steps passed' if not failed else 'FAILED: ' + ', '.join(failed)} in "
        f"{result['total_seconds']:.0f} s"
    ]
    heading = "targets (H100 / H200, default sizes)" + (
        "" if result["targets_apply"] else ": not applicable here"
    )
    lines.append(f"  {heading}")
    for target in result["targets"]:
        value = "-" if target["value"] is None else f"{target['value']:.3g}"
        sign = ">=" if target["at_least"] else "<="
        met = {True: "met", False: "missed", None: "not measured"}[target["met"]]
        lines.append(f"    {target['name']}: {value} (target {sign} {target['target']:g}) {met}")
    return "\n".join(lines)


__all__ = ["DEFAULT", "TINY", "Check", "add_arguments", "run"]
