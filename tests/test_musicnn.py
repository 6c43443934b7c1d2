"""musicnn (`model_type: musicnn`): the conversion from the original TensorFlow checkpoint against the upstream
README's example, the numpy features against transformers' own spectrogram, the frozen backbone, and a whole run
through `finetune/run.py` that saves, reloads as remote code and predicts with the pretrained tags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GENRES, SHARED_DIR, make_gtzan_folder, tone

from ast_dora.models.musicnn import MusicnnConfig, MusicnnFeatureExtractor, MusicnnForAudioClassification
from ast_dora.models.musicnn.convert import convert, fetch_wheel
from ast_dora.models.musicnn.spec import TINY_CONFIG
from ast_dora.models.musicnn.tf_checkpoint import read_index

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = SHARED_DIR / "real-audio" / "musicnn-example"
SR = 16000


@pytest.fixture(scope="module")
def musicnn_wheel():
    """The musicnn 0.1.0 wheel through pip's download (kept in the converter's cache; never installed)."""
    try:
        return fetch_wheel()
    except RuntimeError as error:  # no index reachable and nothing cached
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def mtt_musicnn(musicnn_wheel, tmp_path_factory):
    return convert(tmp_path_factory.mktemp("mtt") / "MTT_musicnn", "MTT_musicnn", wheel=musicnn_wheel)


def test_checkpoint_index_is_read_without_tensorflow(musicnn_wheel, tmp_path):
    import zipfile

    with zipfile.ZipFile(musicnn_wheel) as wheel:
        (tmp_path / "index").write_bytes(wheel.read("musicnn/MSD_musicnn/.index"))
    index = read_index(tmp_path / "index")
    assert index["conv2d/kernel"]["shape"] == [7, 38, 1, 204]  # 7 frames x int(0.4 * 96) mel bands
    assert index["conv2d_2/kernel"]["shape"] == [128, 1, 1, 51]
    assert index["dense/kernel"]["shape"] == [1506, 200] and index["dense_1/kernel"]["shape"] == [200, 50]
    assert all(entry["dtype"] == 1 for entry in index.values())  # DT_FLOAT
    entry = index["dense/kernel"]
    assert entry["size"] == 1506 * 200 * 4


def test_converted_mtt_musicnn_gives_the_upstream_readme_tags(mtt_musicnn):
    """The upstream README's example: mean of the sigmoid taggram over non-overlapping 3-s patches, top ten."""
    from ast_dora.data.decode import decode_audio

    if not EXAMPLE_DIR.is_dir():
        pytest.skip(f"{EXAMPLE_DIR} is absent")
    expected = json.loads((EXAMPLE_DIR / "expected.json").read_text())
    model = MusicnnForAudioClassification.from_pretrained(mtt_musicnn).eval()
    extractor = MusicnnFeatureExtractor.from_pretrained(mtt_musicnn)
    spectrogram = extractor.log_mel(decode_audio(str(EXAMPLE_DIR / expected["file"]), SR).waveform)
    frames = extractor.num_frames
    patches = np.stack(
        [spectrogram[i * frames : (i + 1) * frames] for i in range(len(spectrogram) // frames)]
    )
    with torch.no_grad():
        taggram = torch.sigmoid(
            model(input_values=torch.from_numpy(patches), output_tags=True).tag_logits
        ).numpy()
    likelihoods = taggram.mean(axis=0)
    order = np.argsort(-likelihoods)[:10]
    assert [model.config.tag_labels[i] for i in order] == expected["top10_in_order"]
    # The README rounds to two decimals; a resampler other than librosa's moves them by < 0.01.
    np.testing.assert_allclose(likelihoods[order[:5]], expected["top5_mean_likelihoods_approx"], atol=0.015)
    card = (Path(mtt_musicnn) / "README.md").read_text()
    assert "Pons" in card and "ISC" in card and "jordipons/musicnn" in card
    assert len(json.loads((Path(mtt_musicnn) / "config.json").read_text())["tag_labels"]) == 50


# transformers' `spectrogram` (frame by frame, float64) and the extractor's vectorised numpy agree to float32
# rounding of log10(10000 x + 1) (values up to ~7): 1e-5 absolute; a wrong window, padding or filter bank moves
# them by 1e-2 or more.
FEATURE_ATOL = 1e-5


@pytest.mark.parametrize("seconds", [3.0, 1.0, 4.5], ids=["window", "short", "long"])
def test_features_match_transformers_spectrogram(seconds):
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    extractor = MusicnnFeatureExtractor()
    wave = tone(seconds, SR, freq=330.0, seed=3) + 0.05 * np.random.default_rng(0).standard_normal(
        int(seconds * SR)
    )
    wave = wave.astype(np.float32)
    features = extractor(wave, sampling_rate=SR)["input_values"]
    assert features.shape == (1, 187, 96) and features.dtype == np.float32
    padded = np.pad(wave, (0, max(0, 3 * SR - len(wave))))[: 3 * SR].astype(np.float64)
    filters = mel_filter_bank(
        num_frequency_bins=257,
        num_mel_filters=96,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SR,
        norm="slaney",
        mel_scale="slaney",
    )
    mel = spectrogram(
        padded,
        window_function(512, "hann", periodic=True),
        frame_length=512,
        hop_length=256,
        power=2.0,
        center=True,
        pad_mode="reflect",
        mel_filters=filters,
    )  # (mels, frames)
    reference = np.log10(10000.0 * mel.T + 1.0)[:187]
    np.testing.assert_allclose(features[0], reference, atol=FEATURE_ATOL, rtol=0)


def test_loud_input_stays_finite():
    """The original's float16 mel overflows at 10000 x on loud bins (NaN tags); float32 does not."""
    wave = np.clip(3.0 * tone(3.0, SR, freq=200.0), -1, 1).astype(np.float32)
    features = MusicnnFeatureExtractor()(wave)["input_values"]
    assert np.isfinite(features).all() and features.max() > np.log10(10000 * 6.6e4 / 10000)


def tiny_model(**overrides) -> MusicnnForAudioClassification:
    torch.manual_seed(0)
    model = MusicnnForAudioClassification(MusicnnConfig(**TINY_CONFIG, num_labels=3, **overrides))
    # Pretrained-like batch-norm statistics, so that train-mode batch statistics would differ from them.
    for module in model.musicnn.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def test_frozen_backbone_keeps_the_pretrained_tags_while_the_head_trains():
    model = tiny_model()
    inputs = torch.rand(4, 187, 96) * 3
    model.eval()
    with torch.no_grad():
        before = model(input_values=inputs, output_tags=True).tag_logits
    model.train()
    assert not model.musicnn.training and not any(m.training for m in model.musicnn.modules())
    assert model.classifier.training
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("classifier.") for name in trainable)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    head_before = model.classifier[-1].weight.detach().clone()
    for _ in range(3):
        output = model(input_values=inputs, labels=torch.tensor([0, 1, 2, 0]))
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        after = model(input_values=inputs, output_tags=True).tag_logits
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert not torch.equal(model.classifier[-1].weight, head_before)


def test_unfrozen_backbone_trains_in_train_mode():
    model = tiny_model(freeze_backbone=False)
    model.train()
    assert model.musicnn.training and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="num_mel_bins|96"):
        model(input_values=torch.zeros(2, 187, 40))


def test_temporal_filters_are_same_padded_as_tensorflow():
    """TensorFlow's "same" for an even kernel L: (L - 1) // 2 frames before, L // 2 after. A filter that sums the
    first kernel position only sees the frame (L - 1) // 2 before each output frame."""
    model = tiny_model()
    backbone = model.musicnn
    conv = backbone.temporal[0]
    length = conv.kernel_size[0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # first tap
        x = torch.zeros(1, 1, 187, 96)
        x[0, 0, 100, 5] = 1.0
        padded = torch.nn.functional.pad(x, (0, 0, (length - 1) // 2, length // 2))
        out = conv(padded)[0, 0, :, 5]
    assert out.shape[0] == 187 and int(out.argmax()) == 100 + (length - 1) // 2


REMOTE_CHILD = """
import json, sys
import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline
folder, wave_path = sys.argv[1], sys.argv[2]
model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
wave = np.load(wave_path)
with torch.no_grad():
    out = model(**extractor(wave[: 3 * 16000], return_tensors="pt"), output_tags=True)
song = pipeline("audio-classification", model=folder, trust_remote_code=True)({"raw": wave, "sampling_rate": 16000}, top_k=3)
assert "ast_dora" not in sys.modules
print(json.dumps({"class": type(model).__name__, "logits": out.logits[0].tolist(), "tags": out.tag_logits[0].tolist(),
                  "song": song}))
"""


def test_trains_saves_reloads_and_predicts_with_the_pretrained_tags(tmp_path):
    """configs/small_data_musicnn.yaml through finetune/run.py from a tiny stand-in checkpoint (frozen backbone,
    cached features, a genre head), then remote code without the project, predict's `tags_top`, and the tag head
    untouched by the training."""
    data = make_gtzan_folder(
        tmp_path / "data", tracks_per_genre=3, seconds=6.0, sampling_rate=SR, genres=GENRES[:4]
    )
    output_dir, checkpoint = tmp_path / "run", tmp_path / "tiny_musicnn"
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
            str(REPO_ROOT / "configs" / "small_data_musicnn.yaml"),
            "--data_dir",
            str(data),
            "--split",
            "stratified",
            "--model_name_or_path",
            str(checkpoint),
            "--make_tiny_checkpoint",
            "true",
            "--output_dir",
            str(output_dir),
            "--num_train_epochs",
            "30",
            "--learning_rate",
            "0.05",
            "--hop_seconds",
            "1.0",
            "--config_overrides",
            "classifier_dropout_prob=0.0",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "frozen-feature cache" in (result.stdout + result.stderr).lower()
    metrics = json.loads((output_dir / "all_results.json").read_text())
    assert (
        "test_track_accuracy" in metrics and metrics["trainable_parameters"] < metrics["model_parameters"] / 5
    )
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "genre_musicnn" and config["auto_map"]["AutoModelForAudioClassification"]
    assert (
        config["tag_labels"] == TINY_CONFIG["tag_labels"] and len(config["id2label"]) == 10
    )  # GTZAN's ten genres

    # The tag head and everything under it are the stand-in's, exactly: training moved only the genre head.
    from safetensors.torch import load_file

    before, after = load_file(checkpoint / "model.safetensors"), load_file(output_dir / "model.safetensors")
    backbone = [key for key in before if key.startswith("musicnn.")]
    assert backbone and all(torch.equal(before[key], after[key]) for key in backbone)

    from ast_dora.inference import GenreClassifier

    classifier = GenreClassifier.from_pretrained(str(output_dir), bf16=False)
    wave = tone(7.0, SR, freq=110.0 * 2 ** (2 / 4), seed=99)
    analysis = classifier.analyse(wave, sampling_rate=SR)
    top = analysis.tags_top(3)
    assert top and len(top.split(", ")) == 3 and top.split()[0] in TINY_CONFIG["tag_labels"]

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
    assert remote["class"] == "MusicnnForAudioClassification"
    features = classifier.feature_extractor(wave[: 3 * SR], return_tensors="pt")["input_values"]
    with torch.no_grad():
        local = classifier.model.float()(input_values=features, output_tags=True)
    np.testing.assert_allclose(remote["logits"], local.logits[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(remote["tags"], local.tag_logits[0].numpy(), atol=1e-5)
    assert remote["song"][0]["label"] == analysis.genre

    import soundfile as sf

    song = tmp_path / "song.wav"
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
    row = json.loads(predicted.stdout)[0]
    assert row["tags_top"] == analysis.tags_top() and row["genre"] == analysis.genre


def test_exported_musicnn_gives_the_same_tags_and_the_app_shows_them(tmp_path):
    """ONNX (fp32) and OpenVINO exports carry `tag_logits` beside `logits`: the song's tags match PyTorch's."""
    from song_fixtures import export_tiny_onnx, generated_wav, save_tiny_model

    from ast_dora import export as exporter
    from ast_dora.inference import GenreClassifier

    model_dir = export_tiny_onnx(save_tiny_model("musicnn", tmp_path / "musicnn"))
    assert exporter.main(["openvino", str(model_dir)]) == 0
    for subfolder in ("onnx", "openvino"):
        # the export's self-check compared the tags too (as sigmoid probabilities), file by file
        files = json.loads((model_dir / subfolder / "export.json").read_text())["files"]
        assert files and all(info["passed"] and info["tags_check"]["windows"] > 0 for info in files.values())
    song = generated_wav(tmp_path / "song.wav", 10.0)
    reference = GenreClassifier.from_pretrained(model_dir, bf16=False).analyse(song)
    for backend, options in (("onnx", {"onnx_precision": "fp32"}), ("openvino", {})):
        classifier = GenreClassifier.from_pretrained(model_dir, backend=backend, **options)
        assert "tag_logits" in classifier.runner.output_names
        analysis = classifier.analyse(song)
        # fp32 graphs: float32 rounding only (1e-4 on probabilities of order 0.5).
        np.testing.assert_allclose(analysis.tag_probabilities, reference.tag_probabilities, atol=1e-4, rtol=0)
    import app

    assert f"tagged {reference.tags_top()}" in app.summary_text(reference, 1.0, "musicnn")


def test_the_backends_name_the_tag_output_and_ask_for_it_by_its_flag():
    from ast_dora.backends import TAG_LOGITS, extra_output_kwargs, extra_output_names

    model = MusicnnForAudioClassification(MusicnnConfig(**TINY_CONFIG))
    assert extra_output_names(model) == [TAG_LOGITS] == ["tag_logits"]
    assert extra_output_kwargs(["logits", TAG_LOGITS]) == {"output_tags": True}
    assert extra_output_kwargs(["logits"]) == {}
    output = model(input_values=torch.zeros(2, 187, 96), **extra_output_kwargs([TAG_LOGITS]))
    assert output[TAG_LOGITS].shape == (2, len(TINY_CONFIG["tag_labels"]))


def test_frozen_feature_cache_is_reused_by_window_content(tmp_path):
    """Every window's features are read back from the store (keyed by content, all 16 bytes of each key kept) and
    equal the network's own output."""
    from datasets import Dataset

    from ast_dora.prefix_cache import PREFIX_COLUMN, _row_key, cache_frozen_features

    model = tiny_model()
    rng = np.random.default_rng(0)
    windows = rng.random((40, 187, 96), dtype=np.float32)
    data = Dataset.from_dict({"input_values": windows.tolist(), "labels": [i % 3 for i in range(40)]})
    first, hit = cache_frozen_features(model, data, batch_size=16, cache_dir=str(tmp_path))
    assert not hit
    stored = np.load(next(tmp_path.glob("frozen-*.npz")))["keys"]
    assert stored.shape == (40, 16) and {k.tobytes() for k in stored} == {_row_key(w) for w in windows}
    again, hit = cache_frozen_features(
        model, data.select(range(30, 0, -1)), batch_size=16, cache_dir=str(tmp_path)
    )
    assert hit  # another split of the same windows: nothing computed
    with torch.no_grad():
        expected = model.frozen_features(torch.from_numpy(windows[30:0:-1].copy())).numpy()
    np.testing.assert_allclose(np.stack(again[PREFIX_COLUMN]), expected, atol=1e-6, rtol=0)
