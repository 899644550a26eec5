"""SpecAugment: mask counts and widths, adaptive masks, eval mode, determinism."""

from __future__ import annotations

import torch

from seqlab.layers.spec_augment import SpecAugment


def _runs(flags: list[bool]) -> list[int]:
    """Widths of the runs of True in ``flags``."""
    widths, current = [], 0
    for flag in flags + [False]:
        if flag:
            current += 1
        elif current:
            widths.append(current)
            current = 0
    return widths


def test_one_mask_of_each_kind_has_bounded_width() -> None:
    layer = SpecAugment.Config(
        num_freq_masks=1, max_freq_mask_width=6, num_time_masks=1, max_time_mask_width=9
    ).build()
    generator = torch.Generator().manual_seed(0)
    seen_freq, seen_time = set(), set()
    for _ in range(50):
        masked = layer.mask(torch.tensor([70, 100]), 100, 40, generator)
        for row, length in enumerate((70, 100)):
            freq_runs = _runs(masked[row, :length].all(dim=0).tolist())
            time_runs = _runs(masked[row].all(dim=1).tolist())
            assert len(freq_runs) <= 1 and all(w <= 6 for w in freq_runs)
            assert len(time_runs) <= 1 and all(w <= 9 for w in time_runs)
            assert not masked[row, length:].any(), "masks stay inside the real frames"
            seen_freq.update(freq_runs)
            seen_time.update(time_runs)
    assert max(seen_freq) == 6 and max(seen_time) == 9  # the full width range is drawn


def test_mask_counts() -> None:
    layer = SpecAugment.Config(
        num_freq_masks=3, max_freq_mask_width=2, num_time_masks=4, max_time_mask_width=3
    ).build()
    generator = torch.Generator().manual_seed(1)
    for _ in range(30):
        masked = layer.mask(torch.tensor([200]), 200, 80, generator)[0]
        assert len(_runs(masked.all(dim=0).tolist())) <= 3
        assert len(_runs(masked.all(dim=1).tolist())) <= 4
        assert int(masked.all(dim=0).sum()) <= 3 * 2
        assert int(masked.all(dim=1).sum()) <= 4 * 3


def test_adaptive_time_masks_scale_with_length() -> None:
    layer = SpecAugment.Config(
        num_freq_masks=0,
        num_time_masks=10,
        max_time_mask_width=50,
        time_masks_per_frame=0.02,
        time_mask_max_ratio=0.05,
    ).build()
    generator = torch.Generator().manual_seed(2)
    for _ in range(30):
        masked = layer.mask(torch.tensor([100, 40]), 100, 8, generator)
        long_runs = _runs(masked[0].all(dim=1).tolist())
        assert len(long_runs) <= 2 and all(w <= 5 for w in long_runs)
        assert not masked[1].any(), "0.02 * 40 frames rounds down to no mask"


def test_eval_mode_is_identity_and_training_is_reproducible() -> None:
    layer = SpecAugment.Config().build()
    features = torch.randn(2, 120, 80)
    paddings = torch.zeros(2, 120)
    assert torch.equal(layer.eval()(features, paddings), features)
    layer.train()
    a = layer(features, paddings, torch.Generator().manual_seed(5))
    b = layer(features, paddings, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert (a == 0).any() and not torch.equal(a, features)
    torch.manual_seed(3)
    c = layer(features, paddings)
    torch.manual_seed(3)
    assert torch.equal(c, layer(features, paddings))
