"""Log-mel filterbank front end: waveforms [B, N] -> features [B, T, D] with paddings.

Frames of ``frame_length_ms`` every ``frame_step_ms`` are windowed (periodic Hann),
zero-padded to ``fft_size`` and transformed with ``torch.stft``; the power spectrum is mapped
to mel bands with a hand-built **HTK** mel matrix (mel(f) = 2595 log10(1 + f / 700),
triangles spaced evenly on the mel scale and computed in the mel domain, peak 1, no area
normalization, as ``tf.signal.linear_to_mel_weight_matrix`` that Lingvo uses), and the natural
log is taken with a floor. Only frames lying wholly inside an utterance are real; their count
is ``1 + (num_samples - frame_length) // frame_step``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch.nn import functional as F

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer, apply_paddings, lengths_to_paddings


def hertz_to_mel(hertz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hertz, dtype=torch.float64) / 700.0)


def mel_to_hertz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hertz_to_mel`."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    num_mel_bins: int, fft_size: int, sample_rate: int, lower_hz: float, upper_hz: float
) -> torch.Tensor:
    """HTK triangular mel filters.

    Band m rises linearly (in mel) from center m-1 to center m and falls to center m+1, where
    the ``num_mel_bins + 2`` edges are spaced evenly in mel from ``lower_hz`` to ``upper_hz``.
    Between the first and last center the filters sum to one at every frequency.

    Returns:
      [fft_size // 2 + 1, num_mel_bins] float32 weights (the DC bin gets none).
    """
    num_bins = fft_size // 2 + 1
    bin_mels = hertz_to_mel(torch.linspace(0.0, sample_rate / 2.0, num_bins, dtype=torch.float64))
    # Tensor ends (not float()): the filters also build on the meta device, without values.
    edges = torch.linspace(
        hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_mel_bins + 2, dtype=torch.float64
    )
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mels[:, None] - left) / (center - left)
    falling = (right - bin_mels[:, None]) / (right - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0] = 0.0
    return weights.float()


class LogMelFrontend(Layer):
    """Waveforms to normalized, optionally stacked, log-mel features."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        sample_rate: int = param(16000, doc="Input sample rate (Hz).", at_least=1)
        frame_length_ms: float = param(25.0, doc="Analysis window length.")
        frame_step_ms: float = param(10.0, doc="Hop between frames.")
        fft_size: int = param(512, doc="FFT size (>= frame length in samples).")
        num_mel_bins: int = param(80, doc="Mel bands.")
        lower_edge_hz: float = param(125.0, doc="Lowest mel edge.")
        upper_edge_hz: float = param(7600.0, doc="Highest mel edge (<= sample_rate / 2).")
        preemphasis: float = param(0.97, doc="x[t] - a * x[t-1] before framing (0 = off).")
        log_floor: float = param(1e-6, doc="Mel energies are clamped to this before the log.")
        normalization: Literal["none", "per_utterance", "global"] = param(
            "per_utterance",
            doc="Mean/variance normalization per band: over each utterance's real frames, or "
            "with global statistics gathered from the first training batches (kept in the "
            "state dict).",
        )
        global_stats_frames: int = param(
            500_000, doc="With global normalization: training frames the statistics cover."
        )
        stack_frames: int = param(1, doc="Consecutive frames concatenated into one (1 = off).")
        frame_stride: int = param(1, doc="Keep every k-th (stacked) frame (1 = all).")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.frame_length = round(config.sample_rate * config.frame_length_ms / 1000)
        self.frame_step = round(config.sample_rate * config.frame_step_ms / 1000)
        if config.fft_size < self.frame_length:
            raise ConfigError(
                f"LogMelFrontend.fft_size ({config.fft_size}) must be at least the frame length "
                f"({self.frame_length} samples)"
            )
        if config.upper_edge_hz > config.sample_rate / 2:
            raise ConfigError(
                f"LogMelFrontend.upper_edge_hz ({config.upper_edge_hz}) exceeds the Nyquist "
                f"frequency {config.sample_rate / 2}"
            )
        if config.stack_frames < 1 or config.frame_stride < 1:
            raise ConfigError("LogMelFrontend.stack_frames and frame_stride must be >= 1")
        # Cloned: the periodic window is a view of a one-sample-longer one, and a constant
        # that covers only part of its storage makes torch.export.save warn.
        window = torch.hann_window(self.frame_length, periodic=True).clone()
        self.register_buffer("window", window, persistent=False)
        self.register_buffer(
            "mel_weights",
            mel_filterbank(
                config.num_mel_bins,
                config.fft_size,
                config.sample_rate,
                config.lower_edge_hz,
                config.upper_edge_hz,
            ),
            persistent=False,
        )
        bins = config.num_mel_bins
        self.register_buffer("stats_sum", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("stats_square_sum", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("stats_frames", torch.zeros((), dtype=torch.float64))

    @property
    def output_dim(self) -> int:
        return self.config.num_mel_bins * self.config.stack_frames

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """[B] sample counts -> [B] counts of frames wholly inside the signal."""
        full = torch.div(num_samples - self.frame_length, self.frame_step, rounding_mode="floor")
        return torch.clamp(full + 1, min=0)

    def power_spectrum(self, waveforms: torch.Tensor) -> torch.Tensor:
        """[B, N] samples (padding zeroed) -> [B, T, fft_size // 2 + 1] power per frame."""
        c = self.config
        x = waveforms.float()
        if c.preemphasis > 0:
            x = torch.cat([x[:, :1], x[:, 1:] - c.preemphasis * x[:, :-1]], dim=1)
        # torch.stft centres a short window inside each fft_size segment; shifting the signal
        # by that offset makes frame t cover samples [t * step, t * step + frame_length).
        offset = (c.fft_size - self.frame_length) // 2
        x = F.pad(x, (offset, c.fft_size - self.frame_length - offset))
        if x.shape[1] < c.fft_size:
            x = F.pad(x, (0, c.fft_size - x.shape[1]))
        spectrum = torch.stft(
            x,
            n_fft=c.fft_size,
            hop_length=self.frame_step,
            win_length=self.frame_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        return spectrum.abs().square().transpose(1, 2)

    def forward(
        self, waveforms: torch.Tensor, paddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Computes features.

        Args:
          waveforms: [B, N] float samples.
          paddings: [B, N], 1.0 = pad.

        Returns:
          (features [B, T, output_dim], paddings [B, T]); padded frames are zero.
        """
        c = self.config
        num_samples = (1.0 - paddings).sum(dim=1).round().long()
        power = self.power_spectrum(apply_paddings(waveforms.float(), paddings))
        mel = torch.matmul(power, self.mel_weights)
        features = torch.log(torch.clamp(mel, min=c.log_floor))
        lengths = self.num_frames(num_samples)
        if not torch.compiler.is_exporting():
            # Drops frames past the longest utterance: a no-op when the batch's longest row is
            # unpadded, as an exported program's inputs are (the trim length is a value, which
            # torch.export cannot make a shape).
            features = features[:, : max(int(lengths.max()), 1)]
        frame_paddings = lengths_to_paddings(lengths, features.shape[1])
        features = self._normalize(features, frame_paddings)
        features = apply_paddings(features, frame_paddings)
        if c.stack_frames > 1 or c.frame_stride > 1:
            features, frame_paddings = self._stack(features, lengths)
        return features, frame_paddings

    def _normalize(self, features: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.normalization == "none":
            return features
        real = (1.0 - paddings)[..., None]
        if c.normalization == "per_utterance":
            count = real.sum(dim=1, keepdim=True).clamp(min=1.0)
            mean = (features * real).sum(dim=1, keepdim=True) / count
            var = (((features - mean) * real) ** 2).sum(dim=1, keepdim=True) / count
            return (features - mean) * torch.rsqrt(var + 1e-5)
        if c.normalization != "global":
            raise ConfigError(
                f"LogMelFrontend.normalization {c.normalization!r}; expected none, "
                "per_utterance or global"
            )
        if self.training and float(self.stats_frames) < c.global_stats_frames:
            with torch.no_grad():
                flat = (features * real).double()
                self.stats_sum += flat.sum(dim=(0, 1))
                self.stats_square_sum += (flat * flat).sum(dim=(0, 1))
                self.stats_frames += real.sum().double()
        count = self.stats_frames.clamp(min=1.0)
        mean = self.stats_sum / count
        var = (self.stats_square_sum / count - mean * mean).clamp(min=0.0)
        if float(self.stats_frames) == 0:
            var = torch.ones_like(var)
        return (features - mean.float()) * torch.rsqrt(var.float() + 1e-5)

    def _stack(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenates ``stack_frames`` frames from every ``frame_stride``-th position."""
        c = self.config
        b, t, d = features.shape
        padded = F.pad(features, (0, 0, 0, c.stack_frames - 1))
        stacked = padded.unfold(1, c.stack_frames, 1)  # [B, T, D, K]
        stacked = stacked.transpose(2, 3).reshape(b, t, d * c.stack_frames)
        stacked = stacked[:, :: c.frame_stride]
        out_lengths = torch.div(lengths + c.frame_stride - 1, c.frame_stride, rounding_mode="floor")
        out_paddings = lengths_to_paddings(out_lengths, stacked.shape[1])
        return apply_paddings(stacked, out_paddings), out_paddings
