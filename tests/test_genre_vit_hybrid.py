"""Tests of the ViT-hybrid transformers model: config, loss, feature extractor, model, remote-code loading."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from ast_dora.models.genre_vit_hybrid import (
    GenreViTHybridConfig,
    GenreViTHybridFeatureExtractor,
    GenreViTHybridForAudioClassification,
    focal_loss,
    register_auto_classes,
)
from ast_dora.models.genre_vit_hybrid.modeling_genre_vit_hybrid import GenreViTHybridSpecAugment, dropout

SR = 22050
WINDOW = 88200
GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]


def tiny_config(**kwargs) -> GenreViTHybridConfig:
    defaults = dict(
        image_size=(48, 32),
        patch_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    if "id2label" in kwargs:
        del defaults["num_labels"]
    defaults.update(kwargs)
    return GenreViTHybridConfig(**defaults)


@pytest.fixture(scope="module")
def extractor() -> GenreViTHybridFeatureExtractor:
    return GenreViTHybridFeatureExtractor()


def music_like(batch: int, length: int = WINDOW, seed: int = 0) -> np.ndarray:
    """Tones plus decaying noise, so the spectrogram has structure and a wide dynamic range."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / SR
    waves = []
    for _ in range(batch):
        freqs = rng.uniform(60, 4000, size=3)
        wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / 3
        wave = wave + 0.05 * rng.standard_normal(length) * np.exp(-t)
        waves.append(wave.astype(np.float32))
    return np.stack(waves)


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------


def test_default_config_parameter_count():
    model = GenreViTHybridForAudioClassification(GenreViTHybridConfig())
    count = sum(p.numel() for p in model.parameters())
    assert model.config.num_labels == 10
    assert model.genre_vit_hybrid.embeddings.position_embeddings.shape == (1, 13 * 9 + 1, 512)
    assert abs(count - 25.36e6) <= 0.01 * 25.36e6, count


def test_config_round_trip(tmp_path):
    config = GenreViTHybridConfig(
        id2label=dict(enumerate(GENRES)),
        label2id={g: i for i, g in enumerate(GENRES)},
        loss="cross_entropy",
        drop_path_rate=0.1,
        image_size=(64, 48),
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "genre_vit_hybrid"
    assert saved["loss"] == "cross_entropy"

    loaded = GenreViTHybridConfig.from_pretrained(tmp_path)
    assert loaded.image_size == (64, 48)
    assert loaded.id2label == dict(enumerate(GENRES))
    assert loaded.label2id["jazz"] == 5
    assert loaded.num_labels == 10

    def comparable(c):
        return {k: v for k, v in c.to_dict().items() if k not in ("transformers_version", "_name_or_path")}

    assert comparable(loaded) == comparable(config)

    register_auto_classes()
    register_auto_classes()  # idempotent
    auto = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(auto, GenreViTHybridConfig)
    assert comparable(auto) == comparable(config)


def test_bad_loss_fails_clearly():
    with pytest.raises(ValueError, match=r"loss='bce'.*focal.*cross_entropy"):
        GenreViTHybridConfig(loss="bce")
    with pytest.raises(ValueError, match="pooling"):
        GenreViTHybridConfig(pooling="max")


# --------------------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------------------


def test_focal_loss_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1])
    # Sample 0: p_t = e^2 / (e^2 + e^1 + e^0) = 7.389056 / 11.107338 = 0.665241, log p_t = -0.407606,
    #           (1 - p_t)^2.5 = 0.334759^2.5 = 0.064838, loss = 0.064838 * 0.407606 = 0.026428.
    # Sample 1: p_t = e^0 / (e^0 + e^0 + e^3) = 1 / 22.085537 = 0.045279, log p_t = -3.094923,
    #           (1 - p_t)^2.5 = 0.954721^2.5 = 0.890619, loss = 0.890619 * 3.094923 = 2.756396.
    # Mean over the batch: (0.026428 + 2.756396) / 2 = 1.391412.
    loss = focal_loss(logits, labels, gamma=2.5)
    assert loss.item() == pytest.approx(1.391412, abs=1e-5)

    # Trainer-style normalisation under gradient accumulation: sum over this batch / items in the full batch.
    assert focal_loss(logits, labels, 2.5, num_items_in_batch=4).item() == pytest.approx(
        2.782824 / 4, abs=1e-5
    )
    # Ignored labels do not count.
    masked = focal_loss(logits, torch.tensor([0, -100]), 2.5)
    assert masked.item() == pytest.approx(0.026428, abs=1e-5)


def test_focal_loss_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(16, 10) * 3
    labels = torch.randint(0, 10, (16,))
    torch.testing.assert_close(focal_loss(logits, labels, gamma=0.0), F.cross_entropy(logits, labels))


def test_model_loss_follows_config():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 48, 32)
    labels = torch.tensor([0, 1, 2, 1])
    focal = GenreViTHybridForAudioClassification(tiny_config()).eval()
    ce = GenreViTHybridForAudioClassification(tiny_config(loss="cross_entropy")).eval()
    ce.load_state_dict(focal.state_dict())
    out_focal, out_ce = focal(x, labels=labels), ce(x, labels=labels)
    torch.testing.assert_close(out_focal.logits, out_ce.logits)
    torch.testing.assert_close(out_focal.loss, focal_loss(out_focal.logits, labels, 2.5))
    torch.testing.assert_close(out_ce.loss, F.cross_entropy(out_ce.logits, labels))


# --------------------------------------------------------------------------------------------------------------
# Feature extractor
# --------------------------------------------------------------------------------------------------------------


# The extractor is numpy (it runs without torch); the reference below is torch's STFT and resize, what the extractor
# computed before. Both are float32 with FFTs of different libraries (pocketfft, torch's): measured, the largest
# difference of the [0, 1] images was 1.7e-5 (0.0013 dB of the 80-dB range).
NUMPY_VS_TORCH_ATOL = 5e-5


def reference_features(waves: torch.Tensor, fe: GenreViTHybridFeatureExtractor) -> torch.Tensor:
    """The librosa recipe written plainly in torch: stft -> |.|^2 -> mel -> power_to_db(ref=max) -> min-max -> resize."""
    spec = torch.stft(
        waves,
        fe.n_fft,
        fe.hop_length,
        window=torch.hann_window(fe.n_fft),
        center=True,
        pad_mode=fe.pad_mode,
        return_complex=True,
    )
    mel = torch.from_numpy(fe.mel_filters) @ spec.abs() ** 2
    db = 10 * torch.log10(mel.clamp_min(1e-10)) - 10 * torch.log10(
        mel.amax((1, 2), keepdim=True).clamp_min(1e-10)
    )
    db = torch.maximum(db, db.amax((1, 2), keepdim=True) - 80.0)
    low, high = db.amin((1, 2), keepdim=True), db.amax((1, 2), keepdim=True)
    scaled = (db - low) / (high - low)
    return F.interpolate(scaled[:, None], size=(216, 144), mode="bilinear", align_corners=False)


def test_feature_extractor_shape_range_and_reference(extractor):
    waves = music_like(3)
    out = extractor(waves, sampling_rate=SR, return_tensors="pt")["input_values"]
    assert out.shape == (3, 1, 216, 144)
    assert out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.amax(dim=(1, 2, 3)).min() > 0.9  # each window is stretched over [0, 1]
    torch.testing.assert_close(
        out, reference_features(torch.from_numpy(waves), extractor), atol=NUMPY_VS_TORCH_ATOL, rtol=0
    )

    as_numpy = extractor(waves)["input_values"]
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == (3, 1, 216, 144)


def test_feature_extractor_zero_padded_stft():
    # librosa >= 0.10 pads with zeros by default; the framing is a config choice.
    fe = GenreViTHybridFeatureExtractor(pad_mode="constant")
    waves = torch.from_numpy(music_like(2, seed=4))
    out = fe(waves, return_tensors="pt")["input_values"]
    torch.testing.assert_close(out, reference_features(waves, fe), atol=NUMPY_VS_TORCH_ATOL, rtol=0)


def test_feature_extractor_silence_gives_zeros(extractor):
    out = extractor([np.zeros(WINDOW, dtype=np.float32), np.zeros(1000)], return_tensors="pt")["input_values"]
    assert not torch.isnan(out).any()
    assert torch.equal(out, torch.zeros_like(out))


def test_feature_extractor_batched_equals_one_by_one(extractor):
    waves = music_like(3, seed=1)
    ragged = [
        waves[0],
        waves[1][: WINDOW // 2],
        torch.from_numpy(np.concatenate([waves[2], waves[2][:5000]])),
    ]
    batched = extractor(ragged, sampling_rate=SR, return_tensors="pt")["input_values"]
    single = torch.cat([extractor(w, sampling_rate=SR, return_tensors="pt")["input_values"] for w in ragged])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)

    # Short windows are zero-padded, long ones truncated (windowing itself happens upstream).
    padded = np.zeros(WINDOW, dtype=np.float32)
    padded[: WINDOW // 2] = waves[1][: WINDOW // 2]
    torch.testing.assert_close(
        batched[1:2], extractor(padded, return_tensors="pt")["input_values"], atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        batched[2:3], extractor(waves[2], return_tensors="pt")["input_values"], atol=1e-6, rtol=0
    )
    two_d = extractor(torch.from_numpy(waves), return_tensors="pt")["input_values"]
    torch.testing.assert_close(two_d[0], batched[0], atol=1e-6, rtol=0)


def test_feature_extractor_rejects_other_sampling_rate(extractor):
    with pytest.raises(ValueError, match=r"22050 Hz.*16000 Hz.*resample"):
        extractor(np.zeros(16000), sampling_rate=16000)


def test_feature_extractor_serialisation(tmp_path, extractor):
    as_dict = extractor.to_dict()
    for key in ("mel_filters", "window", "_mel_bands"):
        assert key not in as_dict
    assert as_dict["num_mel_bins"] == 128 and as_dict["hop_length"] == 64 and as_dict["window_seconds"] == 4.0

    extractor.save_pretrained(tmp_path)
    text = (tmp_path / "preprocessor_config.json").read_text()
    assert "mel_filters" not in text and len(text) < 2000
    loaded = GenreViTHybridFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.image_size == (216, 144)
    np.testing.assert_array_equal(loaded.mel_filters, extractor.mel_filters)
    waves = music_like(1, seed=2)
    np.testing.assert_array_equal(loaded(waves)["input_values"], extractor(waves)["input_values"])


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------


def test_spec_augment_train_only():
    config = tiny_config(num_freq_masks=2, freq_mask_max_width=8, num_time_masks=2, time_mask_max_width=6)
    augment = GenreViTHybridSpecAugment(config)
    x = torch.rand(64, 1, 48, 32) + 0.5  # strictly positive, so masked cells are exactly the zeros

    augment.eval()
    assert augment(x) is x

    augment.train()
    torch.manual_seed(0)
    out = augment(x)
    masked = out == 0
    assert masked.any()
    assert torch.equal(out[~masked], x[~masked])
    # Every masked cell lies in a fully masked mel row or time column.
    full_rows = masked.all(dim=3, keepdim=True)
    full_cols = masked.all(dim=2, keepdim=True)
    assert torch.equal(masked, full_rows | full_cols)
    assert full_rows.sum(dim=2).max() <= 16 and full_cols.sum(dim=3).max() <= 12
    # Masks are drawn per sample.
    assert len({tuple(m.flatten().tolist()) for m in masked[:, 0, :, 0]}) > 1

    model = GenreViTHybridForAudioClassification(config)
    model.eval()
    torch.testing.assert_close(model(x).logits, model(x).logits, atol=0, rtol=0)


def test_fast_dropout():
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.ones(1000, 1001, dtype=dtype, requires_grad=True)
        torch.manual_seed(0)
        y = dropout(x, 0.3, training=True)
        assert y.dtype == dtype
        dropped = (y == 0).float().mean().item()
        assert abs(dropped - 0.3) < 0.005
        kept = y[y != 0].unique()
        assert len(kept) == 1 and kept.item() == pytest.approx(1 / 0.7, rel=1e-2)
        y.float().sum().backward()
        torch.testing.assert_close(x.grad, y.detach())  # d(x * mask)/dx = mask
        assert dropout(x, 0.3, training=False) is x


def test_sdpa_and_eager_agree():
    torch.manual_seed(0)
    sdpa = GenreViTHybridForAudioClassification(tiny_config(attn_implementation="sdpa")).eval()
    eager = GenreViTHybridForAudioClassification(tiny_config(attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    x = torch.rand(4, 1, 48, 32)
    torch.testing.assert_close(sdpa(x).logits, eager(x).logits, atol=1e-5, rtol=0)

    out = eager(x, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (4, 4, 7, 7)
    assert len(out.hidden_states) == 3


def test_default_attention_is_sdpa():
    model = GenreViTHybridForAudioClassification(tiny_config())
    assert model.config._attn_implementation == "sdpa"


def test_bf16_autocast_train_step():
    torch.manual_seed(0)
    model = GenreViTHybridForAudioClassification(tiny_config(pooling="mean")).train()
    x, labels = torch.rand(8, 1, 48, 32), torch.randint(0, 3, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_values=x, labels=labels)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_wrong_input_shape_fails_clearly():
    model = GenreViTHybridForAudioClassification(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"\(batch, 1, 48, 32\)"):
        model(torch.rand(2, 1, 40, 32))


# --------------------------------------------------------------------------------------------------------------
# Remote code: a process that never imports the project loads the saved folder
# --------------------------------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import importlib.abc
    import sys


    class BlockProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "ast_dora" or name.startswith("ast_dora."):
                raise ImportError("remote code must not import the project")


    sys.meta_path.insert(0, BlockProject())

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    model_dir, inputs_path, outputs_path = sys.argv[1:4]
    model = AutoModelForAudioClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=True)
    inputs = load_file(inputs_path)
    features = extractor(inputs["waveforms"], sampling_rate=22050, return_tensors="pt")["input_values"]
    with torch.no_grad():
        logits = model(input_values=inputs["input_values"]).logits
    save_file({"logits": logits.contiguous(), "features": features.contiguous()}, outputs_path)
    assert "transformers_modules" in type(model).__module__, type(model).__module__
    assert model.config.id2label[1] == "classical"
    assert "ast_dora" not in sys.modules
    print("child ok")
    """
)


@pytest.mark.slow
def test_remote_code_loads_without_the_project(tmp_path):
    register_auto_classes()
    torch.manual_seed(0)
    config = tiny_config(
        image_size=(216, 144),
        num_hidden_layers=1,
        id2label=dict(enumerate(GENRES)),
        label2id={g: i for i, g in enumerate(GENRES)},
    )
    model = GenreViTHybridForAudioClassification(config).eval()
    extractor = GenreViTHybridFeatureExtractor()
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    extractor.save_pretrained(model_dir)

    saved_config = json.loads((model_dir / "config.json").read_text())
    assert saved_config["auto_map"] == {
        "AutoConfig": "configuration_genre_vit_hybrid.GenreViTHybridConfig",
        "AutoModelForAudioClassification": "modeling_genre_vit_hybrid.GenreViTHybridForAudioClassification",
    }
    saved_fe = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert saved_fe["auto_map"] == {
        "AutoFeatureExtractor": "feature_extraction_genre_vit_hybrid.GenreViTHybridFeatureExtractor"
    }
    for name in ("configuration", "modeling", "feature_extraction"):
        source = (model_dir / f"{name}_genre_vit_hybrid.py").read_text()
        assert "ast_dora" not in source

    waveforms = torch.from_numpy(music_like(2, seed=3))
    features = extractor(waveforms, sampling_rate=SR, return_tensors="pt")["input_values"]
    with torch.no_grad():
        logits = model(input_values=features).logits
    inputs_path, outputs_path = tmp_path / "inputs.safetensors", tmp_path / "outputs.safetensors"
    save_file({"waveforms": waveforms.contiguous(), "input_values": features.contiguous()}, inputs_path)

    work = tmp_path / "cwd"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"))
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_dir), str(inputs_path), str(outputs_path)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "child ok" in result.stdout

    outputs = load_file(outputs_path)
    torch.testing.assert_close(outputs["features"], features, atol=1e-6, rtol=0)
    torch.testing.assert_close(outputs["logits"], logits, atol=1e-5, rtol=0)
    assert not math.isnan(outputs["logits"].sum().item())
