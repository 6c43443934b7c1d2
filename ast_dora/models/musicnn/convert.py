"""Convert a published musicnn model (PyPI `musicnn==0.1.0`, TensorFlow 1 checkpoints) into a transformers folder.

    python -m ast_dora.models.musicnn.convert [--variant MSD_musicnn|MTT_musicnn] [--wheel PATH] OUTPUT_DIR

Without `--wheel`, the wheel is fetched with `pip download musicnn==0.1.0 --no-deps` into a cache folder
(`--cache_dir`, default `~/.cache/ast_dora/musicnn`) and reused; musicnn itself is never installed and
TensorFlow is not needed (the checkpoint is read with numpy: `tf_checkpoint.py`). The output folder holds the
model (safetensors), its config with the 50 tag names (`tag_labels`), the feature extractor, the remote code and a
model card naming the paper, the source and the ISC licence. Its genre head starts as a copy of the tag head (the
folder on its own ranks the tags); fine-tuning from it with genre labels gives a new, randomly initialised genre
head (`ignore_mismatched_sizes`).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

VARIANTS = ("MSD_musicnn", "MTT_musicnn")
WHEEL = "musicnn-0.1.0-py3-none-any.whl"
REQUIREMENT = "musicnn==0.1.0"
DEFAULT_CACHE = Path.home() / ".cache" / "ast_dora" / "musicnn"
_LABEL_LISTS = {"MSD_musicnn": "MSD_LABELS", "MTT_musicnn": "MTT_LABELS"}


def fetch_wheel(cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """The musicnn wheel in `cache_dir`, downloaded by pip (no install, no dependencies) if it is not there."""
    cache_dir = Path(cache_dir)
    wheel = cache_dir / WHEEL
    if not wheel.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            REQUIREMENT,
            "--no-deps",
            "--only-binary",
            ":all:",
            "-d",
            str(cache_dir),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.is_file():
            raise RuntimeError(
                f"`{' '.join(command)}` failed ({result.stderr.strip().splitlines()[-1:] or 'no wheel'}); download "
                f"{WHEEL} from PyPI yourself and pass it with --wheel PATH."
            )
    return wheel


def read_labels(wheel: zipfile.ZipFile, variant: str) -> list[str]:
    """The variant's tag names, as `musicnn/configuration.py` in the wheel lists them."""
    source = wheel.read("musicnn/configuration.py").decode()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == _LABEL_LISTS[variant] for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise ValueError(f"{_LABEL_LISTS[variant]} not found in the wheel's musicnn/configuration.py.")


def read_variant(
    wheel_path: str | Path, variant: str, workdir: Path
) -> tuple[dict[str, np.ndarray], list[str], str]:
    """(checkpoint variables, tag names, licence text) of one variant in the wheel."""
    from .tf_checkpoint import read_checkpoint

    with zipfile.ZipFile(wheel_path) as wheel:
        names = [n for n in wheel.namelist() if n.startswith(f"musicnn/{variant}/.")]
        if not names:
            raise ValueError(
                f"{wheel_path} has no musicnn/{variant}/ checkpoint; is it the musicnn 0.1.0 wheel?"
            )
        wheel.extractall(workdir, members=names)
        labels = read_labels(wheel, variant)
        licence = next((wheel.read(n).decode() for n in wheel.namelist() if n.endswith("LICENSE.md")), "")
    # The files are named ".index" etc.: the checkpoint prefix is the folder itself plus "/".
    return read_checkpoint(f"{workdir / 'musicnn' / variant}/"), labels, licence


def state_dict_from_checkpoint(variables: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """TensorFlow variable names (layers in the order `build_musicnn` creates them) -> the backbone's state dict."""

    def batch_norm(index: int, target: str) -> dict[str, np.ndarray]:
        name = "batch_normalization" + (f"_{index}" if index else "")
        return {
            f"{target}.weight": variables[f"{name}/gamma"],
            f"{target}.bias": variables[f"{name}/beta"],
            f"{target}.running_mean": variables[f"{name}/moving_mean"],
            f"{target}.running_var": variables[f"{name}/moving_variance"],
        }

    def conv(index: int, target: str, one_d: bool = False) -> dict[str, np.ndarray]:
        name = "conv2d" + (f"_{index}" if index else "")
        kernel = variables[f"{name}/kernel"]  # (time, mel, in, out)
        # Conv2d: (out, in, time, mel). Mid end: the kernel spans all channels as its "mel" axis with 1 input.
        weight = kernel[:, :, 0, :].transpose(2, 1, 0) if one_d else kernel.transpose(3, 2, 0, 1)
        return {f"{target}.weight": weight, f"{target}.bias": variables[f"{name}/bias"]}

    state = batch_norm(0, "input_norm")
    layer = 0
    for i, _ in enumerate(config.timbral_heights):
        state |= conv(layer, f"timbral.{i}") | batch_norm(layer + 1, f"timbral_norms.{i}")
        layer += 1
    for i, _ in enumerate(config.temporal_lengths):
        state |= conv(layer, f"temporal.{i}") | batch_norm(layer + 1, f"temporal_norms.{i}")
        layer += 1
    for i in range(3):
        state |= conv(layer, f"midend.{i}", one_d=True) | batch_norm(layer + 1, f"midend_norms.{i}")
        layer += 1
    state |= batch_norm(layer + 1, "pool_norm") | batch_norm(layer + 2, "dense_norm")
    state["dense.weight"], state["dense.bias"] = variables["dense/kernel"].T, variables["dense/bias"]
    state["tag_classifier.weight"], state["tag_classifier.bias"] = (
        variables["dense_1/kernel"].T,
        variables["dense_1/bias"],
    )
    return {f"musicnn.{key}": np.ascontiguousarray(value, dtype=np.float32) for key, value in state.items()}


CARD = """---
license: isc
library_name: transformers
tags:
- audio
- music
- music-tagging
- musicnn
---

# {variant} (musicnn) for transformers

The **{variant}** music tagger of *musicnn: pre-trained convolutional neural networks for music audio tagging*
(Jordi Pons and Xavier Serra, ISMIR 2019 late-breaking/demo; https://arxiv.org/abs/1909.06654), converted to
PyTorch weights (safetensors) from the TensorFlow checkpoint in the `musicnn==0.1.0` wheel on PyPI
(source: https://github.com/jordipons/musicnn) by `python -m ast_dora.models.musicnn.convert`.

- Input: 3-s patches (187 frames) of `log10(10000 mel + 1)`, 96 Slaney mel bands, 16 kHz, n_fft 512, hop 256
  (`MusicnnFeatureExtractor`).
- Outputs: `tag_logits` (sigmoid: the {num_tags} tags of {dataset}, `config.tag_labels`) and `logits` of a genre
  head, which in this folder is a copy of the tag head; fine-tuning with genre labels replaces it.
- Load with `AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True)`.

## Licence

ISC, as the original:

{licence}
"""


def convert(
    output_dir: str | Path,
    variant: str = "MSD_musicnn",
    wheel: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE,
) -> Path:
    """Write the transformers folder of `variant` to `output_dir`; returns it."""
    import tempfile

    import torch

    from . import MusicnnConfig, MusicnnFeatureExtractor, MusicnnForAudioClassification, register_auto_classes

    if variant not in VARIANTS:
        raise ValueError(f"--variant {variant!r} is not converted; use one of {', '.join(VARIANTS)}.")
    wheel = Path(wheel) if wheel else fetch_wheel(cache_dir)
    with tempfile.TemporaryDirectory() as workdir:
        variables, labels, licence = read_variant(wheel, variant, Path(workdir))
    register_auto_classes()
    config = MusicnnConfig(
        tag_labels=labels,
        id2label=dict(enumerate(labels)),
        label2id={t: i for i, t in enumerate(labels)},
    )
    model = MusicnnForAudioClassification(config)
    state = {
        key: torch.from_numpy(value) for key, value in state_dict_from_checkpoint(variables, config).items()
    }
    state["classifier.1.weight"] = state["musicnn.tag_classifier.weight"].clone()
    state["classifier.1.bias"] = state["musicnn.tag_classifier.bias"].clone()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"Checkpoint and model disagree: missing {missing}, unexpected {unexpected}.")
    model.eval()
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    MusicnnFeatureExtractor().save_pretrained(output_dir)
    dataset = "the Million Song Dataset (Last.fm)" if variant.startswith("MSD") else "MagnaTagATune"
    (output_dir / "README.md").write_text(
        CARD.format(variant=variant, num_tags=len(labels), dataset=dataset, licence=licence.strip())
    )
    return output_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ast_dora.models.musicnn.convert", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("output_dir", help="Folder to write the transformers model to.")
    parser.add_argument("--variant", choices=VARIANTS, default="MSD_musicnn")
    parser.add_argument(
        "--wheel", default=None, help=f"A downloaded {WHEEL} (default: pip download into the cache)."
    )
    parser.add_argument(
        "--cache_dir", default=str(DEFAULT_CACHE), help="Where pip's download of the wheel is kept."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = convert(args.output_dir, args.variant, args.wheel, args.cache_dir)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {args.variant} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
