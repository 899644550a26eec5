"""Reading, resampling and writing audio files (WAV, FLAC and what else libsndfile reads)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqlab.core.layer import lengths_to_paddings


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


def audio_info(path: Path) -> tuple[int, int]:
    """(number of samples per channel, sample rate) from the file header.

    Raises:
      AudioError: missing or unreadable file.
    """
    import soundfile  # on use: machines that train text models need not have it

    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioError(f"unreadable audio file {path}: {e}") from None
    return int(info.frames), int(info.samplerate)


def resample_audio(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resamples 1-D ``samples`` with a polyphase anti-aliasing filter (scipy)."""
    from scipy.signal import resample_poly  # on use, as soundfile

    if from_rate == to_rate:
        return samples
    divisor = math.gcd(from_rate, to_rate)
    out = resample_poly(samples, to_rate // divisor, from_rate // divisor)
    return out.astype(np.float32, copy=False)


def read_audio(path: Path, sample_rate: int, resample: bool = True) -> np.ndarray:
    """Reads a file as mono float32 samples in [-1, 1] at ``sample_rate``.

    Channels are averaged. A file at another rate is resampled when ``resample``, else refused.

    Raises:
      AudioError: missing, unreadable or empty file, non-finite samples, or a wrong sample
        rate with ``resample`` off.
    """
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    return _decode_audio(str(path), f"audio file {path}", sample_rate, resample)


def decode_audio(data: bytes, sample_rate: int, name: str = "the audio") -> np.ndarray:
    """``read_audio`` of the bytes of an audio file (an upload): mono float32 samples at
    ``sample_rate``, resampled from the file's own rate.

    Raises:
      AudioError: naming ``name``: bytes that are not an audio file libsndfile reads, no
        samples, or non-finite samples.
    """
    import io

    return _decode_audio(io.BytesIO(data), name, sample_rate, resample=True)


def _decode_audio(source: Any, name: str, sample_rate: int, resample: bool) -> np.ndarray:
    """Mono float32 samples at ``sample_rate`` from a path or file object; ``name`` is how
    errors call it ("audio file x.wav")."""
    import soundfile  # on use: machines that train text models need not have it

    try:
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, EOFError) as e:
        raise AudioError(f"unreadable {name}: {e}") from None
    if samples.shape[0] == 0:
        raise AudioError(f"empty {name} (no samples)")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"{name} holds non-finite samples")
    if rate != sample_rate:
        if not resample:
            raise AudioError(
                f"{name} has sample rate {rate} Hz, expected {sample_rate} Hz "
                "(enable resampling or convert the file)"
            )
        mono = resample_audio(mono, rate, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def pad_waveforms(
    waveforms: list[np.ndarray], min_width: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono waveforms -> (audio [B, N] float32, paddings [B, N], 1.0 = pad), N the longest
    waveform's length (at least ``min_width``); padded samples are zero."""
    num_samples = torch.tensor([len(w) for w in waveforms])
    audio = torch.zeros(len(waveforms), max(int(num_samples.max()), min_width))
    for row, samples in enumerate(waveforms):
        audio[row, : len(samples)] = torch.from_numpy(np.asarray(samples, dtype=np.float32))
    return audio, lengths_to_paddings(num_samples, audio.shape[1])


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Writes 16-bit PCM mono WAV atomically (a temporary file renamed into place)."""
    import soundfile  # on use: machines that train text models need not have it

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    clipped = np.clip(samples, -1.0, 1.0)
    soundfile.write(str(tmp), clipped, sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def audio_duration(path: Path) -> float:
    """Seconds of audio in the file at ``path``."""
    import soundfile  # on use: machines that train text models need not have it

    return float(soundfile.info(str(path)).duration)
