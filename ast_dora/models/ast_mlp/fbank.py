"""AST's features for a batch of windows in one numpy pass: what song analysis computes instead of calling
`ASTFeatureExtractor` once per window (the spec's `batched_features`).

`ASTFeatureExtractor` calls `torchaudio.compliance.kaldi.fbank` once per window (with torchaudio installed;
without it, a numpy fbank that differs slightly). The same steps as torchaudio on all frames of the batch at
once, in numpy, give the same numbers (`tests/test_inference.py` states the tolerance) with no torch, so the
model's inputs are those it was trained on wherever it runs. numpy only: song analysis on an exported model
imports this without torch.
"""

from __future__ import annotations

import numpy as np

# torchaudio's kaldi fbank as ASTFeatureExtractor calls it: 25-ms Hann ("hanning", symmetric) frames every 10 ms,
# snip_edges, per-frame DC removal, pre-emphasis 0.97, 512-point FFT, power, kaldi mel bank 20 Hz..Nyquist, log.
_KALDI_EPSILON = float(np.finfo(np.float32).eps)
_PREEMPHASIS = 0.97
# Frames per block of the batched fbank: the block's frames and spectrum stay in cache.
_FBANK_BLOCK = 1024


def _mel(frequency: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + frequency / 700.0)


def kaldi_mel_banks(
    num_bins: int, fft_length: int, sampling_rate: float, low_freq: float = 20.0, high_freq: float = 0.0
) -> np.ndarray:
    """Kaldi's triangular mel filters (`torchaudio.compliance.kaldi.get_mel_banks` without VTLN warping), in
    numpy: (num_bins, fft_length // 2) float32, the FFT bins below Nyquist."""
    nyquist = 0.5 * sampling_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    mel_low, mel_high = _mel(np.float64(low_freq)), _mel(np.float64(high_freq))
    delta = (mel_high - mel_low) / (num_bins + 1)
    left = mel_low + np.arange(num_bins, dtype=np.float64)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    mel = _mel(sampling_rate / fft_length * np.arange(fft_length // 2, dtype=np.float64))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


class ASTFbankFeatures:
    """`ASTFeatureExtractor(windows)["input_values"]` (its torchaudio kaldi fbank) for a batch of equal-length
    windows in one numpy pass.

    `ASTFeatureExtractor` calls `torchaudio.compliance.kaldi.fbank` once per window (with torchaudio installed;
    without it, a numpy fbank that differs slightly). The same steps as torchaudio on all frames of the batch at
    once, in numpy, give the same numbers (`tests/test_inference.py` states the tolerance) with no torch, so the
    model's inputs are those it was trained on wherever it runs.
    """

    def __init__(self, feature_extractor):
        self.feature_extractor = feature_extractor
        sampling_rate = int(feature_extractor.sampling_rate)
        self.frame_length = int(sampling_rate * 0.025)
        self.frame_shift = int(sampling_rate * 0.010)
        self.fft_length = 1 << (self.frame_length - 1).bit_length()
        mel_banks = kaldi_mel_banks(feature_extractor.num_mel_bins, self.fft_length, float(sampling_rate))
        # (fft_length // 2 + 1, num_mel_bins): the Nyquist bin gets no weight, as in kaldi.
        self.mel_banks = np.ascontiguousarray(np.pad(mel_banks, ((0, 0), (0, 1))).T)
        # torch.hann_window(periodic=False): 0.5 - 0.5 cos(2 pi n / (N - 1))
        n = np.arange(self.frame_length, dtype=np.float64)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / (self.frame_length - 1))).astype(np.float32)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """(batch, samples) float32 -> (batch, max_length, num_mel_bins) float32."""
        fe = self.feature_extractor
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        batch, num_samples = windows.shape
        if num_samples < self.frame_length:
            raise ValueError(
                f"windows of {num_samples} samples are shorter than one {self.frame_length}-sample frame"
            )
        num_frames = 1 + (num_samples - self.frame_length) // self.frame_shift
        kept = min(num_frames, fe.max_length)
        item = windows.itemsize
        frames = np.lib.stride_tricks.as_strided(
            windows,
            (batch, kept, self.frame_length),
            (windows.strides[0], self.frame_shift * item, item),
            writeable=False,
        ).reshape(batch * kept, self.frame_length)
        features = np.zeros((batch, fe.max_length, self.mel_banks.shape[1]), dtype=np.float32)
        log_mel = features[:, :kept].reshape(batch * kept, -1) if kept == fe.max_length else None
        out = (
            np.empty((batch * kept, self.mel_banks.shape[1]), dtype=np.float32)
            if log_mel is None
            else log_mel
        )
        for start in range(0, len(frames), _FBANK_BLOCK):
            block = frames[start : start + _FBANK_BLOCK]
            block = block - block.mean(axis=-1, keepdims=True, dtype=np.float32)
            # x[j] - 0.97 x[j - 1], the first sample against itself (kaldi's "replicate" edge)
            emphasised = np.empty_like(block)
            emphasised[:, 1:] = block[:, 1:] - _PREEMPHASIS * block[:, :-1]
            emphasised[:, 0] = block[:, 0] - _PREEMPHASIS * block[:, 0]
            emphasised *= self.window
            spectrum = np.fft.rfft(emphasised, n=self.fft_length)
            power = spectrum.real**2 + spectrum.imag**2
            np.log(np.maximum(power @ self.mel_banks, _KALDI_EPSILON), out=out[start : start + len(block)])
        if log_mel is None:
            features[:, :kept] = out.reshape(batch, kept, -1)
        if fe.do_normalize:
            features = (features - np.float32(fe.mean)) / np.float32(fe.std * 2)
        return features


__all__ = ["ASTFbankFeatures", "kaldi_mel_banks"]
