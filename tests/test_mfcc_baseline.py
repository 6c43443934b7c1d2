"""The classical baseline (`model_type: mfcc_baseline`): its numpy features against torchaudio, the learned
standardiser, the loss, and a whole run through `finetune/run.py` that saves, reloads as remote code and predicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GENRES, make_gtzan_folder, tone

from ast_dora.models.mfcc_baseline import (
    MfccBaselineConfig,
    MfccBaselineFeatureExtractor,
    MfccBaselineForAudioClassification,
    MfccBaselineStandardizer,
    weighted_cross_entropy,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SR = 22050


def music_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(0.2 * np.sin(2 * np.pi * f * t) * np.exp(-(t % 0.37) * 4) for f in rng.uniform(80, 4000, 4))
    return (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def torchaudio_reference(wave: np.ndarray, extractor: MfccBaselineFeatureExtractor) -> np.ndarray:
    """The same statistics computed independently: torchaudio's MelSpectrogram / AmplitudeToDB / MFCC (float64)."""
    torchaudio = pytest.importorskip("torchaudio")
    melkwargs = dict(
        n_fft=extractor.n_fft,
        hop_length=extractor.hop_length,
        n_mels=extractor.num_mel_bins,
        norm="slaney",
        mel_scale="slaney",
        center=True,
        pad_mode="reflect",
        power=2.0,
    )
    mel = torchaudio.transforms.MelSpectrogram(SR, **melkwargs).double()
    to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=extractor.top_db)
    mfcc = torchaudio.transforms.MFCC(
        SR, n_mfcc=extractor.num_mfcc, dct_type=2, norm="ortho", log_mels=False, melkwargs=melkwargs
    ).double()
    x = torch.from_numpy(wave).double()
    log_mel, coefficients = to_db(mel(x)).numpy(), mfcc(x).numpy()  # (mels, frames), (mfcc, frames)
    return np.concatenate([coefficients.mean(1), coefficients.std(1), log_mel.mean(1), log_mel.std(1)])


# Our float64 numpy and torchaudio's float64 agree to ~4e-5 dB (the float32 output's rounding of values up to
# ~100 dB); a wrong filter bank, DCT normalisation or dB floor moves them by whole dB.
FEATURE_ATOL_DB = 1e-3


@pytest.mark.parametrize("seconds", [3.0, 0.5, 5.0], ids=["window", "short", "truncated"])
def test_features_match_torchaudio(seconds):
    extractor = MfccBaselineFeatureExtractor()
    wave = music_like(seconds, seed=1)
    features = extractor(wave, sampling_rate=SR)["input_values"]
    assert features.shape == (1, extractor.feature_size) == (1, 296) and features.dtype == np.float32
    reference = torchaudio_reference(wave[: int(extractor.window_seconds * SR)], extractor)
    np.testing.assert_allclose(features[0], reference, atol=FEATURE_ATOL_DB, rtol=0)


def test_batch_of_windows_equals_one_by_one():
    extractor = MfccBaselineFeatureExtractor(num_mel_bins=64, num_mfcc=13)
    waves = np.stack([music_like(3.0, seed) for seed in range(3)])
    batched = extractor(torch.from_numpy(waves), return_tensors="pt")["input_values"]
    assert batched.shape == (3, 2 * (13 + 64))
    for row, wave in zip(batched, waves, strict=True):
        np.testing.assert_array_equal(row.numpy(), extractor(list(wave))["input_values"][0])


def test_feature_extractor_round_trip_and_rejects_other_rates(tmp_path):
    extractor = MfccBaselineFeatureExtractor(num_mfcc=13, top_db=60.0)
    extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert not {"mel_filters", "window", "dct_matrix"} & set(saved)
    reloaded = MfccBaselineFeatureExtractor.from_pretrained(tmp_path)
    wave = music_like(2.0, seed=4)
    np.testing.assert_array_equal(reloaded(wave)["input_values"], extractor(wave)["input_values"])
    with pytest.raises(ValueError, match="16000 Hz"):
        extractor(wave, sampling_rate=16000)


def test_standardiser_learns_the_training_set_statistics():
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.normal(5.0, 3.0, (50, 7)).astype(np.float32))
    standardiser = MfccBaselineStandardizer(7, eps=1e-8).train()
    for _epoch in range(2):  # every epoch adds the same samples: the statistics stay those of the data set
        for batch in data.split(16):  # last batch of 2
            standardiser(batch)
        np.testing.assert_allclose(standardiser.running_mean.numpy(), data.numpy().mean(0), rtol=1e-5)
        np.testing.assert_allclose(standardiser.running_var.numpy(), data.numpy().var(0), rtol=1e-4)
    assert standardiser.num_samples_tracked.item() == 100
    standardiser.eval()
    out = standardiser(data)  # eval: no update, the data set comes out standardised
    assert standardiser.num_samples_tracked.item() == 100
    np.testing.assert_allclose(out.numpy().mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.numpy().std(0), 1.0, atol=1e-4)


def test_loss_by_hand_class_weights_and_accumulation():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    weights = torch.tensor([1.0, 2.0, 0.5])
    log_p = torch.log_softmax(logits, -1)[torch.arange(6), labels]
    by_hand = -(weights[labels] * log_p).sum() / 6
    torch.testing.assert_close(weighted_cross_entropy(logits, labels, class_weights=weights), by_hand)
    # Two micro-batches told the step's item count add up to the whole batch's loss.
    halves = sum(
        weighted_cross_entropy(
            logits[i : i + 3], labels[i : i + 3], num_items_in_batch=6, class_weights=weights
        )
        for i in (0, 3)
    )
    torch.testing.assert_close(halves, by_hand)
    # Through the model, with the weights from its config.
    config = MfccBaselineConfig(num_features=4, num_labels=3, class_weights=[1.0, 2.0, 0.5])
    model = MfccBaselineForAudioClassification(config).eval()
    x = torch.randn(6, 4)
    out = model(input_values=x, labels=labels)
    torch.testing.assert_close(out.loss, weighted_cross_entropy(out.logits, labels, class_weights=weights))
    # Set on the config after the model is built (what the training pipeline's class weighting does): honoured.
    model.config.class_weights = [3.0, 1.0, 1.0]
    torch.testing.assert_close(
        model(input_values=x, labels=labels).loss,
        weighted_cross_entropy(out.logits, labels, class_weights=torch.tensor([3.0, 1.0, 1.0])),
    )
    with pytest.raises(ValueError, match="class_weights"):
        MfccBaselineConfig(num_labels=3, class_weights=[1.0, 2.0])


def test_hidden_layer_and_wrong_input_shape():
    model = MfccBaselineForAudioClassification(MfccBaselineConfig(hidden_size=8)).eval()
    assert model(input_values=torch.randn(2, 296)).logits.shape == (2, 10)
    with pytest.raises(ValueError, match=r"\(batch, 296\)"):
        model(input_values=torch.randn(2, 1, 296))


REMOTE_CHILD = """
import json, sys
import numpy as np
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline
folder, wave_path = sys.argv[1], sys.argv[2]
model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
wave = np.load(wave_path)
import torch
with torch.no_grad():
    logits = model(**extractor(wave[: 3 * 22050], return_tensors="pt")).logits
song = pipeline("audio-classification", model=folder, trust_remote_code=True)({"raw": wave, "sampling_rate": 22050}, top_k=3)
assert "ast_dora" not in sys.modules
print(json.dumps({"class": type(model).__name__, "logits": logits[0].tolist(), "song": song}))
"""


@pytest.mark.slow
def test_trains_saves_reloads_and_predicts(tmp_path):
    """configs/mfcc_baseline.yaml through finetune/run.py on a tiny folder (ten pitches, 3 tracks per genre), then
    the saved folder as remote code without the project, the whole-song pipeline and `predict`."""
    data = make_gtzan_folder(tmp_path / "data", tracks_per_genre=3, seconds=4.0)
    output_dir = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"),
    }
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "finetune" / "run.py"),
            "--config",
            str(REPO_ROOT / "configs" / "mfcc_baseline.yaml"),
            "--data_dir",
            str(data),
            "--split",
            "stratified",
            "--output_dir",
            str(output_dir),
            "--num_train_epochs",
            "40",
            "--per_device_train_batch_size",
            "16",
            "--learning_rate",
            "0.05",
            "--save_strategy",
            "no",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((output_dir / "all_results.json").read_text())
    # One test track per genre, each genre a different pitch: a trained linear model gets them (chance is 0.1).
    assert metrics["test_track_accuracy"] >= 0.9, metrics
    config = json.loads((output_dir / "config.json").read_text())
    assert (
        config["model_type"] == "genre_mfcc_baseline"
        and config["auto_map"]["AutoModelForAudioClassification"]
    )
    assert json.loads((output_dir / "preprocessor_config.json").read_text())["hop_seconds"] == 1.0

    from ast_dora.inference import GenreClassifier

    classifier = GenreClassifier.from_pretrained(str(output_dir), bf16=False)
    assert classifier.spec.name == "mfcc_baseline"
    wave = tone(7.0, SR, freq=110.0 * 2 ** (4 / 4), seed=99)  # the fifth genre's pitch
    analysis = classifier.analyse(wave, sampling_rate=SR)
    assert analysis.genre == GENRES[4] and len(analysis.window_starts) == 3  # 3-s windows back to back
    # The standardiser's statistics travelled with the weights: the reloaded model is the trained one.
    model = classifier.model
    assert model.standardizer.num_samples_tracked.item() > 0

    wave_path = tmp_path / "wave.npy"
    np.save(wave_path, wave)
    child_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    child_env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"))
    (tmp_path / "cwd").mkdir()
    child = subprocess.run(
        [sys.executable, "-c", REMOTE_CHILD, str(output_dir), str(wave_path)],
        cwd=tmp_path / "cwd",
        env=child_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    remote = json.loads(child.stdout.strip().splitlines()[-1])
    assert remote["class"] == "MfccBaselineForAudioClassification"
    features = classifier.feature_extractor(wave[: 3 * SR], return_tensors="pt")["input_values"]
    with torch.no_grad():
        local_logits = model.float()(input_values=features).logits[0]
    np.testing.assert_allclose(remote["logits"], local_logits.numpy(), atol=1e-5)
    assert remote["song"][0]["label"] == GENRES[4]
    assert remote["song"][0]["score"] == pytest.approx(float(analysis.probabilities.max()), abs=1e-5)

    song = tmp_path / "song.wav"
    import soundfile as sf

    sf.write(song, wave, SR)
    predicted = subprocess.run(
        [sys.executable, "-m", "ast_dora.predict", str(song), "--model", str(output_dir), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads(predicted.stdout)[0]["genre"] == GENRES[4]
