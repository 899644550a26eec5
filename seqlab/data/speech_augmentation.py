"""Waveform augmentation of training utterances: speed perturbation, gain, additive noise and
dither.

``ASRData`` applies it to the utterances of its training stream only, before the model's
front end turns the waveform into log-mel features; eval, decode, ``seqlab infer`` and
exported programs hear the audio as it is. Every random draw comes from a NumPy generator
seeded with (seed, epoch, utterance index), so an utterance's augmented waveform is a pure
function of those three: a run resumed from a checkpoint hears exactly what an uninterrupted
run hears, whatever the batch it falls into, the number of ranks or batches made ahead. Each
kind of augmentation has its own child generator, so switching one on or off leaves the draws
of the others unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from seqlab.core.config import Config, ConfigError, Configurable, param
from seqlab.data.audio_files import resample_audio

SPEED_STEPS = 100
"""Speed factors are whole hundredths: resampling by p/100 keeps the polyphase filter short."""


class SpeechAugmentation(Configurable):
    """Seeded, per-utterance perturbation of mono float32 waveforms."""

    @dataclasses.dataclass
    class Config(Config):
        speeds: tuple[float, ...] = param(
            (1.0,),
            doc="Speed factors, one drawn uniformly per utterance; the waveform is resampled "
            "(1.1 plays 10% faster and higher, and has 1/1.1 of the frames). Whole hundredths. "
            "(1.0,) = off; Kaldi's recipe: 0.9,1.0,1.1.",
        )
        max_gain_db: float = param(
            0.0,
            doc="Gain drawn uniformly in [-max, +max] dB per utterance (0 = off). With "
            "per-utterance feature normalization it changes features only relative to the "
            "dither and the log floor.",
            at_least=0,
        )
        noise_prob: float = param(
            0.0,
            doc="Fraction of utterances that get additive noise (0 = off).",
            at_least=0,
            at_most=1,
        )
        noise_color: Literal["white", "pink"] = param(
            "pink", doc="Generated noise: white (flat spectrum) or pink (power falls as 1/f)."
        )
        min_snr_db: float = param(10.0, doc="Lowest signal-to-noise ratio of additive noise (dB).")
        max_snr_db: float = param(30.0, doc="Highest signal-to-noise ratio of additive noise (dB).")
        dither: float = param(
            0.0,
            doc="Standard deviation of Gaussian noise added to every sample of every training "
            "utterance, so digital silence does not sit on the log floor (0 = off; 3e-5 is one "
            "16-bit step, Kaldi's dither=1).",
            at_least=0,
        )

    config: Config

    def __init__(self, config: Config) -> None:
        self.config = config
        if not config.speeds:
            raise ConfigError(
                "data.augmentation.speeds is empty; 1.0 alone turns speed perturbation off"
            )
        self.speed_steps = []
        for speed in config.speeds:
            steps = round(speed * SPEED_STEPS)
            if speed <= 0 or abs(speed * SPEED_STEPS - steps) > 1e-6:
                raise ConfigError(
                    f"data.augmentation.speeds holds {speed}; speeds must be positive whole "
                    "hundredths (e.g. 0.9,1.0,1.1)"
                )
            self.speed_steps.append(steps)
        if config.min_snr_db > config.max_snr_db:
            raise ConfigError(
                f"data.augmentation.min_snr_db ({config.min_snr_db}) exceeds "
                f"data.augmentation.max_snr_db ({config.max_snr_db})"
            )

    @property
    def enabled(self) -> bool:
        """Whether any augmentation changes a waveform."""
        c = self.config
        perturbs_speed = any(steps != SPEED_STEPS for steps in self.speed_steps)
        return perturbs_speed or c.max_gain_db > 0 or c.noise_prob > 0 or c.dither > 0

    def __call__(self, samples: np.ndarray, seed: int, epoch: int, utterance: int) -> np.ndarray:
        """The augmented waveform of ``utterance`` in ``epoch`` of a run seeded with ``seed``.

        Args:
          samples: [N] float32 mono samples.

        Returns:
          [M] float32 samples; M = ceil(N / speed) (N when the speed is 1).
        """
        c = self.config
        # Non-negative entropy for SeedSequence; a negative seed maps to its own stream.
        entropy = [seed & 0xFFFFFFFFFFFFFFFF, epoch, utterance]
        speed_rng, gain_rng, noise_rng, dither_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(4)
        )
        steps = self.speed_steps[int(speed_rng.integers(len(self.speed_steps)))]
        out = resample_audio(np.asarray(samples, dtype=np.float32), steps, SPEED_STEPS)
        if c.max_gain_db > 0:
            out = out * np.float32(10.0 ** (gain_rng.uniform(-c.max_gain_db, c.max_gain_db) / 20))
        if c.noise_prob > 0 and noise_rng.random() < c.noise_prob:
            snr_db = noise_rng.uniform(c.min_snr_db, c.max_snr_db)
            out = out + scaled_noise(out, snr_db, c.noise_color, noise_rng)
        if c.dither > 0:
            out = out + np.float32(c.dither) * dither_rng.standard_normal(len(out), np.float32)
        return np.ascontiguousarray(out, dtype=np.float32)


def colored_noise(
    num_samples: int, color: Literal["white", "pink"], rng: np.random.Generator
) -> np.ndarray:
    """[num_samples] float32 Gaussian noise, white or pink (power falling as 1/f, no DC).

    Pink noise is drawn in the frequency domain: the spectrum of white Gaussian noise has
    independent Gaussian real and imaginary parts, which are divided by sqrt(frequency) and
    transformed once (half the cost of shaping generated white noise), at the next length
    that factors into small primes and cut to ``num_samples``.
    """
    from scipy.fft import irfft, next_fast_len  # on use, as resample_audio's scipy

    if color == "white" or num_samples < 2:
        return rng.standard_normal(num_samples, dtype=np.float32)
    length = next_fast_len(num_samples, real=True)
    num_bins = length // 2 + 1
    spectrum = rng.standard_normal((2, num_bins), dtype=np.float32)
    spectrum[:, 0] = 0.0
    spectrum[:, 1:] /= np.sqrt(np.arange(1, num_bins, dtype=np.float32))
    pink = irfft(spectrum[0] + 1j * spectrum[1], n=length)[:num_samples]
    return np.ascontiguousarray(pink, dtype=np.float32)


def scaled_noise(
    samples: np.ndarray, snr_db: float, color: Literal["white", "pink"], rng: np.random.Generator
) -> np.ndarray:
    """Noise for ``samples`` [N] at ``snr_db`` (mean powers over the whole utterance):
    [N] float32, all zero for a silent utterance (whose SNR has no meaning)."""
    noise = colored_noise(len(samples), color, rng)
    signal_power = float(np.mean(np.square(samples, dtype=np.float64))) if len(samples) else 0.0
    noise_power = float(np.mean(np.square(noise, dtype=np.float64))) if len(noise) else 0.0
    if signal_power == 0.0 or noise_power == 0.0:
        return np.zeros(len(samples), dtype=np.float32)
    scale = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return noise * np.float32(scale)
