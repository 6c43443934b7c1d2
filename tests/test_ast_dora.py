"""AST + DoRA: what is wrapped, what trains, and that adapter, reload and merge agree."""

import json

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.utils import ModulesToSaveWrapper
from transformers import set_seed

from ast_dora.config import ModelArguments
from ast_dora.models.ast_mlp import ASTWithMLPHeadForAudioClassification
from ast_dora.models.ast_mlp.dora import build_ast_dora, dora_target_modules
from ast_dora.models.factory import load_trained_model, save_trained_model
from ast_dora.models.tiny_ast import make_tiny_ast

LABELS = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
# Merging folds W + BA rescaled by the DoRA magnitude into one matrix: fp32 rounding only.
MERGE_ATOL = 1e-5


def model_args(path, **kwargs):
    defaults = dict(
        model_type="ast_dora", model_name_or_path=str(path), min_layer=2, classifier_hidden_size=16
    )
    return ModelArguments(**{**defaults, **kwargs})


def perturb_adapters(model, seed=0):
    """DoRA starts as the identity (lora_B = 0); give it weights so that the checks below can fail."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def spectrogram_batch(batch=3, seed=1):
    return torch.randn(batch, 1024, 128, generator=torch.Generator().manual_seed(seed))


def test_tiny_checkpoint_loads_through_from_pretrained(tiny_ast_dir):
    config = json.loads((tiny_ast_dir / "config.json").read_text())
    assert config["model_type"] == "audio-spectrogram-transformer"
    assert (tiny_ast_dir / "model.safetensors").is_file()
    assert (tiny_ast_dir / "preprocessor_config.json").is_file()
    model = build_ast_dora(model_args(tiny_ast_dir), LABELS)
    base = model.get_base_model()
    assert isinstance(base, ASTWithMLPHeadForAudioClassification)
    assert base.config.id2label == dict(enumerate(LABELS))
    assert base.config.label2id["rock"] == 9
    assert base.classifier.fc2.out_features == len(LABELS)
    assert base.classifier.fc1.out_features == 16


def test_dora_wraps_exactly_the_ffn_linears_of_top_layers(tiny_ast_dir):
    model = build_ast_dora(model_args(tiny_ast_dir, min_layer=2), LABELS)
    wrapped = {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    expected = {
        f"base_model.model.audio_spectrogram_transformer.layers.{layer}.mlp.{linear}"
        for layer in (2, 3)
        for linear in ("fc1", "fc2")
    }
    assert wrapped == expected
    assert all(module.use_dora["default"] for name, module in model.named_modules() if name in expected)
    # The head has fc1/fc2 too: it must be trained as a whole (modules_to_save), not adapted.
    assert isinstance(model.base_model.model.classifier, ModulesToSaveWrapper)

    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable, "nothing trains"
    for name in trainable:
        assert "lora_" in name or "classifier.modules_to_save" in name, name
    assert not any("attention" in name for name in trainable)
    assert not any(".layers.0." in name or ".layers.1." in name for name in trainable)


def test_target_regex_rejects_min_layer_past_the_last_layer():
    assert dora_target_modules(12, 10) == r"audio_spectrogram_transformer\.layers\.(10|11)\.mlp\.(fc1|fc2)"
    with pytest.raises(ValueError, match="min_layer=4 leaves no layer"):
        dora_target_modules(4, 4)


def test_adapter_reload_and_merge_reproduce_logits(tiny_ast_dir, tmp_path):
    from ast_dora.models.factory import build_feature_extractor

    args = model_args(tiny_ast_dir)
    model = build_ast_dora(args, LABELS).eval()
    perturb_adapters(model)
    inputs = spectrogram_batch()
    with torch.no_grad():
        reference = model(input_values=inputs).logits

    # Adapter alone, reloaded on a fresh base.
    model.save_pretrained(tmp_path / "adapter_only")
    adapter_files = {p.name for p in (tmp_path / "adapter_only").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= adapter_files
    size = (tmp_path / "adapter_only" / "adapter_model.safetensors").stat().st_size
    assert size < 200_000, f"adapter should be small, is {size} bytes"
    fresh = build_ast_dora(args, LABELS).get_base_model()
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter_only").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_values=inputs).logits, reference, rtol=0, atol=1e-6)

    # The pipeline's save: adapter subfolder + merged model; both load back to the same logits.
    save_trained_model(model, build_feature_extractor(args), tmp_path / "run")
    merged, feature_extractor = load_trained_model(str(tmp_path / "run"))
    assert not isinstance(merged, PeftModel)
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    from_adapter, _ = load_trained_model(str(tmp_path / "run" / "adapter"))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_values=inputs).logits, reference, rtol=0, atol=MERGE_ATOL)
        torch.testing.assert_close(
            from_adapter(input_values=inputs).logits, reference, rtol=0, atol=MERGE_ATOL
        )
    assert feature_extractor.sampling_rate == 16000


def test_bad_min_layer_and_model_type_fail_clearly(tiny_ast_dir):
    with pytest.raises(ValueError, match="min_layer=7 leaves no layer"):
        build_ast_dora(model_args(tiny_ast_dir, min_layer=7), LABELS)
    with pytest.raises(ValueError, match="model_type='ast'"):
        ModelArguments(model_type="ast")


def test_smoke_stand_in_is_pretrained_on_other_tracks_and_rebuilt_only_when_its_recipe_changes(
    tmp_path, monkeypatch, caplog
):
    import logging

    from ast_dora.models import tiny_ast

    # A few tracks and epochs: the recipe's mechanics, not its accuracy (the smoke run measures that).
    monkeypatch.setattr(
        tiny_ast,
        "PRETRAIN",
        {**tiny_ast.PRETRAIN, "tracks_per_genre": 3, "speech_tracks": 6, "noise_tracks": 6, "epochs": 3},
    )
    caplog.set_level(logging.INFO, logger="ast_dora.models.tiny_ast")
    random_dir = make_tiny_ast(tmp_path / "random")
    pretrained_dir = make_tiny_ast(tmp_path / "pretrained", pretrain=True)

    losses = [
        float(r.getMessage().rsplit("loss ", 1)[1])
        for r in caplog.records
        if "pretraining epoch" in r.getMessage()
    ]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert "seed 1000" in caplog.text  # not the smoke data's seed
    config = json.loads((pretrained_dir / "config.json").read_text())
    # an AudioSet-like head: Speech, Music, Noise and AudioSet's names of the genres, multi-label
    assert [config["id2label"][str(i)] for i in range(len(config["id2label"]))] == list(
        tiny_ast.STAND_IN_AUDIOSET_LABELS
    )
    assert config["problem_type"] == "multi_label_classification"
    recipe = json.loads((pretrained_dir / tiny_ast.STAND_IN_FILE).read_text())
    assert recipe["pretrain"]["seed"] == tiny_ast.PRETRAIN_SEED != 0

    # Same recipe: reused as is. Another recipe (here: no pretraining): rebuilt in place.
    weights = pretrained_dir / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert (
        make_tiny_ast(pretrained_dir, pretrain=True) == pretrained_dir
        and weights.stat().st_mtime_ns == written
    )
    make_tiny_ast(pretrained_dir)
    assert json.loads((pretrained_dir / tiny_ast.STAND_IN_FILE).read_text())["pretrain"] is None
    assert len(json.loads((pretrained_dir / "config.json").read_text())["id2label"]) == 527
    assert (random_dir / "model.safetensors").read_bytes() == weights.read_bytes()

    # The first version of the stand-in (random, no stand_in.json) is recognised and rebuilt.
    (random_dir / tiny_ast.STAND_IN_FILE).unlink()
    make_tiny_ast(random_dir, pretrain=True)
    assert json.loads((random_dir / tiny_ast.STAND_IN_FILE).read_text())["pretrain"] is not None

    # A checkpoint this project did not write is never touched.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    assert make_tiny_ast(foreign, pretrain=True) == foreign and sorted(p.name for p in foreign.iterdir()) == [
        "config.json"
    ]


def test_building_the_stand_in_leaves_the_random_state_alone(tmp_path):
    """A run that writes the stand-in first must initialise its adapters and head like one that finds it on
    disk: `make_tiny_ast` seeds and trains inside, but gives the caller's random state back."""
    import random

    import numpy as np

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    set_seed(7)
    expected = draws()
    set_seed(7)
    make_tiny_ast(tmp_path / "stand_in")
    assert draws() == expected


@pytest.mark.parametrize("path", ["folded", "lean", "zero_magnitude"])
@pytest.mark.parametrize("bf16", [False, True])
def test_fused_dora_forward_matches_peft(tiny_ast_dir, bf16, path, monkeypatch):
    """Both DoRA forwards of models/fused_dora.py compute peft's function: same outputs and gradients.

    folded: the CPU path (weight folded, own backward); lean: the path used off CPU; zero_magnitude: a magnitude
    of exactly 0 (where the folded backward's division cannot be used) falls back to the lean path on CPU.
    """
    from peft.tuners.lora import Linear as LoraLinear

    from ast_dora.models import fused_dora

    fused = build_ast_dora(model_args(tiny_ast_dir, dora_rank=4), LABELS)
    perturb_adapters(fused)
    if path == "zero_magnitude":
        with torch.no_grad():
            next(p for n, p in fused.named_parameters() if "lora_magnitude_vector" in n)[5] = 0.0
    folded_calls = []
    can_fold = fused_dora._can_fold
    monkeypatch.setattr(
        fused_dora,
        "_can_fold",
        lambda x, m: folded_calls.append(can_fold(x, m)) or (path != "lean" and can_fold(x, m)),
    )
    reference = build_ast_dora(model_args(tiny_ast_dir, dora_rank=4), LABELS)
    reference.load_state_dict(fused.state_dict())
    for module in reference.modules():
        if isinstance(module, LoraLinear) and "forward" in vars(module):
            del module.forward  # back to peft's own
    assert (
        sum("forward" in vars(m) for m in fused.modules() if isinstance(m, LoraLinear)) == 4
    )  # fc1/fc2, 2 layers
    fused.train(), reference.train()
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(3, 1024, 128, generator=generator)
    labels = torch.tensor([0, 3, 9])
    results = []
    for model in (fused, reference):
        torch.manual_seed(1)  # the same dropout masks in the head
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = model(input_values=inputs, labels=labels)
        output.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((output.logits.float(), output.loss.float(), grads))
    (logits, loss, grads), (ref_logits, ref_loss, ref_grads) = results
    # bf16: the same ops rounded in another order (peft's fp32-promoted elementwise ops vs bf16 ones).
    tolerance = dict(atol=2e-2, rtol=2e-2) if bf16 else dict(atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits, ref_logits, **tolerance)
    torch.testing.assert_close(loss, ref_loss, **tolerance)
    assert grads.keys() == ref_grads.keys() and any("lora_magnitude_vector" in n for n in grads)
    for name in grads:
        scale = ref_grads[name].abs().max().clamp_min(1e-12)
        assert ((grads[name] - ref_grads[name]).abs().max() / scale) < (5e-2 if bf16 else 1e-4), name
    # On CPU every DoRA linear folds, except the one with a zero magnitude.
    assert len(folded_calls) == 4 and folded_calls.count(False) == (1 if path == "zero_magnitude" else 0)


def test_model_windows_fall_back_per_field_on_the_specs_defaults():
    """A fresh ViT-hybrid feature extractor has its own `window_seconds` (its input length) but no hop: training
    must still use the spec's 2-s hop, not windows back to back."""
    from transformers import ASTFeatureExtractor

    from ast_dora.models import get_model_spec
    from ast_dora.models.factory import model_windows, set_windows
    from ast_dora.models.genre_vit_hybrid import GenreViTHybridFeatureExtractor

    vit, ast = get_model_spec("vit_hybrid"), get_model_spec("ast_dora")
    assert model_windows(GenreViTHybridFeatureExtractor(), vit) == (4.0, 2.0)
    assert model_windows(ASTFeatureExtractor(), ast) == (10.24, 10.24)
    saved = ASTFeatureExtractor()
    set_windows(saved, 5.0, 2.5)
    assert model_windows(saved, ast) == (5.0, 2.5)
