"""Waveform augmentation for the train split, applied on the fly in the DataLoader workers.

Each augmentation has a probability and a parameter range in `DataArguments` (`augment_<name>_prob`,
`augment_<name>_..._range`): speed/tempo (resampling, as `torchaudio.functional.speed`; torchaudio >= 2.9 has
no sox effects or AudioEffector), low-pass and high-pass biquads, an echo (FFT convolution with a two-tap
impulse response), gain and white noise at a random SNR. The result is cropped or zero-padded back to the
window length so every window keeps its shape.

When any augmentation is on, the train split stores decoded windows (float32 bytes in its `input_values`
column) and `AugmentedFeatureTransform` (set with `Dataset.with_transform`) augments and featurises them
when a batch is read - in the DataLoader worker processes, not the main process. It returns only
`input_values` and `labels`. Evaluation splits are never augmented. (SpecAugment on features is the models'
job; mixup is not implemented here.)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .features import extract_features


class WaveformAugmenter:
    """Applies the configured augmentations to one 1-D float32 window with a given `np.random.Generator`."""

    def __init__(self, config: dict, sampling_rate: int):
        self.config = dict(config)
        self.sampling_rate = int(sampling_rate)

    def _on(self, name: str, rng: np.random.Generator) -> bool:
        p = self.config.get(f"augment_{name}_prob", 0.0)
        return p > 0 and rng.random() < p

    def _draw(self, key: str, rng: np.random.Generator) -> float:
        low, high = self.config[key]
        return float(rng.uniform(low, high))

    @property
    def enabled(self) -> bool:
        return any(v > 0 for k, v in self.config.items() if k.endswith("_prob"))

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # Imported here, not at module level: the data package is imported by every command (configs, the GPU
        # check), and only augmentation needs torchaudio.
        import torchaudio.functional as F

        length = len(waveform)
        sr = self.sampling_rate
        x = torch.from_numpy(np.array(waveform, dtype=np.float32, copy=True))
        if self._on("speed", rng):
            # factor = k / 100: `speed(x, 100, k / 100)` resamples from rate k to 100; calling `resample` with
            # the integer rates directly avoids `speed`'s int(factor * orig_freq) truncation.
            k = int(round(self._draw("augment_speed_range", rng) * 100))
            if k != 100:
                g = math.gcd(k, 100)
                x = F.resample(x, k // g, 100 // g)
                x = _fit(x, length, rng)
        nyquist = 0.5 * sr
        if self._on("lowpass", rng):
            cutoff = min(self._draw("augment_lowpass_cutoff_range", rng), 0.95 * nyquist)
            x = F.lowpass_biquad(x, sr, cutoff)
        if self._on("highpass", rng):
            cutoff = min(self._draw("augment_highpass_cutoff_range", rng), 0.95 * nyquist)
            x = F.highpass_biquad(x, sr, cutoff)
        if self._on("echo", rng):
            delay = max(1, int(self._draw("augment_echo_delay_range", rng) * sr))
            decay = self._draw("augment_echo_decay_range", rng)
            ir = torch.zeros(2 * delay + 1)
            ir[0], ir[delay], ir[2 * delay] = 1.0, decay, decay * decay
            x = F.fftconvolve(x, ir)[:length]
        if self._on("gain", rng):
            x = x * (10.0 ** (self._draw("augment_gain_db_range", rng) / 20.0))
        if self._on("noise", rng):
            snr_db = self._draw("augment_noise_snr_db_range", rng)
            power = float(torch.mean(x * x)) + 1e-10
            noise = torch.from_numpy(rng.standard_normal(length).astype(np.float32))
            x = x + noise * math.sqrt(power / (10.0 ** (snr_db / 10.0)))
        return x.numpy().astype(np.float32, copy=False)


def _fit(x: torch.Tensor, length: int, rng: np.random.Generator) -> torch.Tensor:
    """Random crop (slowed down) or zero-pad at the end (sped up) back to `length` samples."""
    if len(x) > length:
        start = int(rng.integers(0, len(x) - length + 1))
        return x[start : start + length]
    if len(x) < length:
        return torch.nn.functional.pad(x, (0, length - len(x)))
    return x


class AugmentedFeatureTransform:
    """`Dataset.with_transform` callable: float32 window bytes -> augmented features.

    Seeding: every call draws a fresh generator `np.random.default_rng([seed, stream, counter])` where
    `stream` is `torch.utils.data.get_worker_info().seed` inside a DataLoader worker (torch sets it to the
    loader's per-epoch base seed + worker id, so it differs per worker and per epoch and follows the Trainer's
    seed) and 0 in the main process, and `counter` counts this object's calls in that process (each worker
    holds its own copy). The same seed and data order therefore give the same augmented batches, and a new
    epoch gives new ones.
    """

    def __init__(self, augmenter: WaveformAugmenter, feature_extractor, sampling_rate: int, seed: int):
        self.augmenter = augmenter
        self.feature_extractor = feature_extractor
        self.sampling_rate = int(sampling_rate)
        self.seed = int(seed)
        self.calls = 0

    def _rng(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        stream = 0 if info is None else int(info.seed) % (2**63)
        self.calls += 1
        return np.random.default_rng([self.seed, stream, self.calls])

    def __call__(self, batch: dict) -> dict:
        if "input_values" not in batch:  # e.g. dataset["track_id"]: nothing to augment
            return batch
        rng = self._rng()
        windows = [self.augmenter(np.frombuffer(b, dtype=np.float32), rng) for b in batch["input_values"]]
        features = extract_features(self.feature_extractor, windows, self.sampling_rate)
        return {"input_values": torch.from_numpy(features), "labels": torch.as_tensor(batch["labels"])}
