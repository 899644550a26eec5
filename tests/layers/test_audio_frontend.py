"""Log-mel front end: a synthetic sine against a hand computation; paddings; normalization."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.layers.audio_frontend import LogMelFrontend, hertz_to_mel, mel_filterbank

RATE = 16000


def _sine(freq: float, seconds: float, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(RATE * seconds), dtype=torch.float64) / RATE
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()


def _frontend(**kwargs: object) -> LogMelFrontend:
    config = LogMelFrontend.Config(num_mel_bins=40, preemphasis=0.0, normalization="none", **kwargs)
    return config.build().eval()


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_sine_peak_bin_and_log_energy_match_hand_computation(freq: float) -> None:
    frontend = _frontend()
    wave = _sine(freq, 0.5)
    features, paddings = frontend(wave[None], torch.zeros(1, len(wave)))
    # Peak: the band whose centre (evenly spaced in HTK mel) lies nearest the tone.
    c = frontend.config
    edges = torch.linspace(
        float(hertz_to_mel(c.lower_edge_hz)), float(hertz_to_mel(c.upper_edge_hz)), 42
    )
    expected_bin = int((edges[1:-1] - float(hertz_to_mel(freq))).abs().argmin())
    assert features[0].mean(dim=0).argmax().item() == expected_bin
    # Energy: Parseval for a windowed sine, one-sided spectrum: sum_k |X_k|^2 =
    # (fft_size / 2) * sum_n (A sin(...) w_n)^2 ~= (fft_size / 2) * A^2 / 2 * sum_n w_n^2; the
    # HTK triangles sum to one between the first and last centre, so the mel bands add up
    # to that power.
    window = torch.hann_window(400, periodic=True, dtype=torch.float64)
    expected = math.log(c.fft_size / 2 * 0.5**2 / 2 * float((window**2).sum()))
    band_total = torch.logsumexp(features[0].double(), dim=-1)
    assert band_total.mean().item() == pytest.approx(expected, abs=0.05)


def test_frame_count_and_paddings_follow_lengths() -> None:
    frontend = _frontend()
    lengths = [16000, 8000, 400, 399]
    waves = torch.zeros(4, 16000)
    for row, n in enumerate(lengths):
        waves[row, :n] = _sine(500.0, n / RATE)
    paddings = (torch.arange(16000)[None] >= torch.tensor(lengths)[:, None]).float()
    features, frame_paddings = frontend(waves, paddings)
    expected = [1 + (n - 400) // 160 if n >= 400 else 0 for n in lengths]
    assert (1 - frame_paddings).sum(dim=1).tolist() == expected
    assert features.shape[1] == max(expected)
    assert torch.all(features[frame_paddings.bool()] == 0)


@pytest.mark.parametrize("normalization", ["none", "per_utterance"])
def test_padding_invariance(normalization: str) -> None:
    frontend = LogMelFrontend.Config(num_mel_bins=24, normalization=normalization).build().eval()
    wave = torch.randn(5000) * 0.1
    alone, alone_pad = frontend(wave[None], torch.zeros(1, 5000))
    batch = torch.randn(2, 9000)  # garbage in the padding must not matter
    batch[0, :5000] = wave
    paddings = torch.zeros(2, 9000)
    paddings[0, 5000:] = 1.0
    together, together_pad = frontend(batch, paddings)
    length = int((1 - alone_pad).sum())
    assert int((1 - together_pad[0]).sum()) == length
    torch.testing.assert_close(together[0, :length], alone[0, :length], atol=1e-4, rtol=1e-4)


def test_per_utterance_normalization_gives_zero_mean_unit_variance() -> None:
    frontend = LogMelFrontend.Config(num_mel_bins=20, normalization="per_utterance").build()
    features, _ = frontend(torch.randn(1, 8000), torch.zeros(1, 8000))
    torch.testing.assert_close(features[0].mean(0), torch.zeros(20), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        features[0].std(0, unbiased=False), torch.ones(20), atol=1e-2, rtol=0
    )


def test_global_normalization_gathers_statistics_in_training_then_freezes() -> None:
    config = LogMelFrontend.Config(num_mel_bins=10, normalization="global", global_stats_frames=100)
    frontend = config.build().train()
    wave = torch.randn(2, 16000)
    frontend(wave, torch.zeros(2, 16000))
    frames = float(frontend.stats_frames)
    assert frames == 2 * 98
    frontend(wave, torch.zeros(2, 16000))
    assert float(frontend.stats_frames) == frames  # past global_stats_frames: frozen
    features, _ = frontend.eval()(wave, torch.zeros(2, 16000))
    torch.testing.assert_close(features.mean(dim=(0, 1)), torch.zeros(10), atol=1e-3, rtol=0)
    copy = config.build()
    copy.load_state_dict(frontend.state_dict())
    assert float(copy.stats_frames) == frames


def test_frame_stacking_and_stride() -> None:
    base = _frontend()
    stacked = _frontend(stack_frames=3, frame_stride=2)
    wave = torch.randn(1, 4000)
    plain, plain_pad = base(wave, torch.zeros(1, 4000))
    out, out_pad = stacked(wave, torch.zeros(1, 4000))
    assert stacked.output_dim == 120
    assert out.shape[1] == math.ceil(plain.shape[1] / 2)
    assert int((1 - out_pad).sum()) == math.ceil(int((1 - plain_pad).sum()) / 2)
    torch.testing.assert_close(out[0, 1], torch.cat([plain[0, 2], plain[0, 3], plain[0, 4]]))


def test_mel_filters_sum_to_one_between_first_and_last_centre() -> None:
    weights = mel_filterbank(30, 512, RATE, 125.0, 7600.0)
    freqs = torch.linspace(0, RATE / 2, 257)
    centres = torch.linspace(float(hertz_to_mel(125.0)), float(hertz_to_mel(7600.0)), 32)
    inside = (hertz_to_mel(freqs) > centres[1]) & (hertz_to_mel(freqs) < centres[-2])
    torch.testing.assert_close(weights[inside].sum(1), torch.ones(int(inside.sum())))


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="fft_size"):
        LogMelFrontend.Config(fft_size=256).build()
    with pytest.raises(ConfigError, match="Nyquist"):
        LogMelFrontend.Config(sample_rate=8000, upper_edge_hz=7600.0).build()
