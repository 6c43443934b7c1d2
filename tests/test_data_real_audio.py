"""Real recordings from ../shared/real-audio: the mini GTZAN as a local source, and decoding every file there
(wav, au, ogg, mp3, flac; 22.05 and 44.1 kHz; mono and stereo) to both models' rates. Skips when absent."""

import numpy as np
import pytest
import soundfile as sf

from ast_dora.data import DataArguments, build_datasets, decode_audio, load_source
from ast_dora.data.build import window_counts

RATES = (16000, 22050)  # AST, ViT-hybrid


def test_real_gtzan_folder_as_local_source(real_gtzan_dir, tmp_path, tiny_feature_extractor):
    source = load_source(DataArguments(data_dir=str(real_gtzan_dir)))
    ids = source.tracks["track_id"]
    assert len(ids) == 11 and "blues.00001" in ids and "rock.00000" in ids
    args = DataArguments(data_dir=str(real_gtzan_dir), features_cache_dir=str(tmp_path), split="stratified")
    data = build_datasets(
        args, tiny_feature_extractor, default_window=(4.0, 2.0), output_dir=tmp_path / "run"
    )
    assert data.summary["tracks_decoded"] == 11 and not data.summary["skipped_unreadable"]
    counts = {
        **window_counts(data.datasets["train"]),
        **window_counts(data.datasets["validation"]),
        **window_counts(data.datasets["test"]),
    }
    assert set(counts) == set(ids) and set(counts.values()) == {14}  # 30-s clips: 14 windows of 4 s / 2 s


@pytest.mark.parametrize("rate", RATES)
def test_decode_every_real_file(shared_dir, rate):
    real = shared_dir / "real-audio"
    files = (
        sorted(real.glob("gtzan/*/*.wav"))
        + sorted(real.glob("gtzan-au/*/*.au"))
        + sorted(real.glob("formats/*"))
    )
    if not files:
        pytest.skip(f"no real audio under {real}")
    kinds = {p.suffix for p in files}
    assert {".wav", ".au"} <= kinds
    for path in files:
        decoded = decode_audio(str(path), rate)
        x = decoded.waveform
        assert x.ndim == 1 and x.dtype == np.float32 and np.isfinite(x).all(), path
        # resampling a clipped master overshoots full scale a little (Gibbs); a mean downmix never adds gain
        assert decoded.sampling_rate == rate and 0.01 < np.abs(x).max() < 1.5, (path, np.abs(x).max())
        if path.suffix in (".wav", ".flac", ".ogg"):
            info = sf.info(path)
            assert (
                decoded.source_sampling_rate == info.samplerate and decoded.source_channels == info.channels
            )
            assert abs(decoded.duration - info.duration) < 0.05, (path, decoded.duration, info.duration)
        if path.parent.parent.name == "formats":
            assert decoded.source_channels == 2 and decoded.source_sampling_rate == 44100, path


def test_au_and_wav_copies_decode_alike(shared_dir):
    real = shared_dir / "real-audio"
    au = real / "gtzan-au" / "jazz" / "jazz.00000.au"
    wav = real / "gtzan" / "jazz" / "jazz.00000.wav"
    if not (au.is_file() and wav.is_file()):
        pytest.skip("jazz.00000 .au/.wav pair not present")
    a, w = decode_audio(str(au), 22050).waveform, decode_audio(str(wav), 22050).waveform
    n = min(len(a), len(w))
    assert abs(len(a) - len(w)) < 0.05 * 22050
    assert np.corrcoef(a[:n], w[:n])[0, 1] > 0.99
