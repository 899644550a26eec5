"""Waveform augmentation of training utterances: what each kind does, that it is a pure
function of (seed, epoch, utterance), that a restored stream collates the same augmented
features, and that eval input is untouched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.core.nested_map import NestedMap
from seqlab.data.asr_data import ASRData
from seqlab.data.speech_augmentation import SpeechAugmentation, colored_noise
from seqlab.layers.audio_frontend import LogMelFrontend

RATE = 16000
EVERYTHING = SpeechAugmentation.Config(
    speeds=(0.9, 1.0, 1.1), max_gain_db=6.0, noise_prob=0.5, dither=1e-4
)


def _augmentation(**fields: object) -> SpeechAugmentation:
    return SpeechAugmentation.Config(**fields).build()


def _tone(hertz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * hertz * t)).astype(np.float32)


def _peak_hertz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * RATE / len(samples)


def test_speed_resamples_to_the_expected_length_and_pitch() -> None:
    tone = _tone(1000.0)
    for speed in (0.9, 1.1):
        out = _augmentation(speeds=(speed,))(tone, seed=1, epoch=0, utterance=0)
        assert out.dtype == np.float32
        assert len(out) == int(np.ceil(len(tone) / speed))
        assert _peak_hertz(out) == pytest.approx(1000.0 * speed, abs=2.0)
    assert np.array_equal(_augmentation()(tone, seed=1, epoch=0, utterance=0), tone)


def test_speeds_are_drawn_uniformly_per_utterance() -> None:
    augment = _augmentation(speeds=(0.9, 1.0, 1.1))
    tone = _tone(500.0, 0.1)
    lengths = [len(augment(tone, seed=3, epoch=0, utterance=u)) for u in range(300)]
    counts = {n: lengths.count(n) for n in set(lengths)}
    assert sorted(counts) == [1455, 1600, 1778]
    assert all(70 < c < 130 for c in counts.values()), counts


def test_gain_stays_within_its_range_and_varies() -> None:
    augment = _augmentation(max_gain_db=6.0)
    tone = _tone(300.0, 0.1)
    gains = []
    for u in range(50):
        out = augment(tone, seed=0, epoch=0, utterance=u)
        ratio = out / np.where(tone == 0, 1, tone)
        gains.append(20 * np.log10(float(np.median(ratio[tone != 0]))))
    assert -6.0 <= min(gains) < -3.0 and 3.0 < max(gains) <= 6.0


@pytest.mark.parametrize("color", ["white", "pink"])
def test_noise_has_the_drawn_snr_and_its_color(color: str) -> None:
    augment = _augmentation(noise_prob=1.0, noise_color=color, min_snr_db=5.0, max_snr_db=15.0)
    tone = _tone(440.0)
    snrs = []
    for u in range(20):
        noise = augment(tone, seed=0, epoch=0, utterance=u).astype(np.float64) - tone
        snrs.append(10 * np.log10(np.mean(tone.astype(np.float64) ** 2) / np.mean(noise**2)))
    assert 5.0 <= min(snrs) < 8.0 and 12.0 < max(snrs) <= 15.0
    power = np.abs(np.fft.rfft(colored_noise(RATE, color, np.random.default_rng(0)))) ** 2
    low, high = power[50:500].mean(), power[5000:7000].mean()
    assert (low / high > 5.0) == (color == "pink"), low / high


def test_noise_prob_picks_that_fraction_and_silence_gets_no_noise() -> None:
    augment = _augmentation(noise_prob=0.3)
    tone = _tone(440.0, 0.05)
    noised = sum(
        not np.array_equal(augment(tone, seed=0, epoch=0, utterance=u), tone) for u in range(400)
    )
    assert 90 < noised < 150
    silence = np.zeros(800, dtype=np.float32)
    assert not _augmentation(noise_prob=1.0)(silence, seed=0, epoch=0, utterance=0).any()


def test_dither_lifts_digital_silence_off_the_log_floor() -> None:
    silence = np.zeros(RATE, dtype=np.float32)
    out = _augmentation(dither=1e-4)(silence, seed=0, epoch=0, utterance=0)
    assert out.std() == pytest.approx(1e-4, rel=0.05)
    frontend = LogMelFrontend.Config(normalization="none").build()
    floor = float(np.log(frontend.config.log_floor))

    def share_above_floor(samples: np.ndarray) -> float:
        features, _ = frontend(torch.from_numpy(samples)[None], torch.zeros(1, len(samples)))
        return float((features > floor + 1e-3).float().mean())

    assert share_above_floor(silence) == 0.0 and share_above_floor(out) > 0.4


def test_a_pure_function_of_seed_epoch_and_utterance() -> None:
    augment = EVERYTHING.build()
    tone = _tone(440.0, 0.3)
    first = augment(tone, seed=5, epoch=2, utterance=7)
    assert np.array_equal(first, EVERYTHING.build()(tone.copy(), seed=5, epoch=2, utterance=7))
    for other in ((6, 2, 7), (5, 3, 7), (5, 2, 8)):
        out = augment(tone, *other)
        assert len(out) != len(first) or not np.array_equal(out, first), other


def test_each_kind_draws_from_its_own_generator() -> None:
    """Switching gain on leaves the speed and the dither drawn for each utterance unchanged."""
    tone, silence = _tone(440.0, 0.1), np.zeros(800, dtype=np.float32)
    for u in range(10):
        sped = _augmentation(speeds=(0.9, 1.1))(tone, seed=0, epoch=0, utterance=u)
        louder = _augmentation(speeds=(0.9, 1.1), max_gain_db=6.0)(tone, 0, 0, u)
        assert len(louder) == len(sped)
        ratio = louder[sped != 0] / sped[sped != 0]
        assert np.allclose(ratio, ratio[0], rtol=1e-5) and ratio[0] != 1.0
        dithered = _augmentation(dither=1e-4)(silence, seed=0, epoch=0, utterance=u)
        both = _augmentation(dither=1e-4, max_gain_db=6.0)(silence, 0, 0, u)
        assert np.array_equal(dithered, both)


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"augmentation\.speeds holds 0\.955"):
        _augmentation(speeds=(0.9, 0.955))
    with pytest.raises(ConfigError, match=r"augmentation\.speeds is empty"):
        _augmentation(speeds=())
    with pytest.raises(ConfigError, match=r"min_snr_db \(20\.0\) exceeds"):
        _augmentation(noise_prob=1.0, min_snr_db=20.0, max_snr_db=10.0)


def _features(batch: NestedMap) -> torch.Tensor:
    frontend = LogMelFrontend.Config(num_mel_bins=40).build()
    return frontend(batch.audio, batch.audio_paddings)[0]


def test_a_restored_stream_collates_the_same_augmented_features(
    manifest_dir: Path, speech_data: Callable[..., ASRData]
) -> None:
    """Batches 5..19 (crossing epochs) collated after a restore from the position after
    batch 4 equal, bitwise in audio and features, those of a stream that never stopped."""
    data = speech_data(manifest_dir, augmentation=EVERYTHING.copy())
    examples = data.examples("train")
    stream = data.train_stream(examples, seed=7)
    for _ in range(5):
        data.collate(examples, next(stream))
    state = stream.state_dict()
    expected = [data.collate(examples, next(stream)) for _ in range(15)]
    assert stream.epoch >= 2

    fresh = speech_data(manifest_dir, augmentation=EVERYTHING.copy())
    fresh_examples = fresh.examples("train")
    resumed = fresh.train_stream(fresh_examples, seed=7)
    resumed.load_state_dict(state)
    for want in expected:
        got = fresh.collate(fresh_examples, next(resumed))
        assert got.indices == want.indices
        assert torch.equal(got.audio, want.audio)
        assert torch.equal(got.audio_paddings, want.audio_paddings)
        assert torch.equal(_features(got), _features(want))

    plain = speech_data(manifest_dir).examples("train")
    raw = data.collate(plain, expected[0].indices)
    assert not torch.equal(raw.audio, expected[0].audio)


def test_the_same_utterance_sounds_different_in_each_epoch(
    manifest_dir: Path, speech_data: Callable[..., ASRData]
) -> None:
    data = speech_data(manifest_dir, augmentation=SpeechAugmentation.Config(dither=1e-3))
    examples = data.examples("train")
    stream = data.train_stream(examples, seed=7)
    heard: dict[tuple[int, int], np.ndarray] = {}
    while stream.epoch < 2:
        indices = next(stream)
        batch = data.collate(examples, indices)
        for row, index in enumerate(indices):
            length = int((1 - batch.audio_paddings[row]).sum())
            heard[(stream.epoch, index)] = batch.audio[row, :length].numpy()
    assert not np.array_equal(heard[(0, 3)], heard[(1, 3)])


def test_only_the_training_stream_is_augmented(
    manifest_dir: Path, speech_data: Callable[..., ASRData]
) -> None:
    augmented = speech_data(manifest_dir, augmentation=EVERYTHING.copy())
    plain = speech_data(manifest_dir)
    train = augmented.examples("train")
    augmented.train_stream(train, seed=7)
    indices = list(range(4))
    for split in ("dev", "test"):
        assert torch.equal(
            augmented.collate(augmented.examples(split), indices).audio,
            plain.collate(plain.examples(split), indices).audio,
        )
    # Training examples not bound to a stream (e.g. decoding the train split) stay raw.
    assert torch.equal(
        augmented.collate(augmented.examples("train"), indices).audio,
        plain.collate(plain.examples("train"), indices).audio,
    )
    assert not torch.equal(
        augmented.collate(train, indices).audio,
        plain.collate(plain.examples("train"), indices).audio,
    )


def test_off_by_default() -> None:
    assert not ASRData.Config().augmentation.build().enabled
    assert EVERYTHING.build().enabled
