"""SpecAugment (Park et al. 2019): frequency and time masks on features, in training only.

Each utterance gets ``num_freq_masks`` bands of ``0..max_freq_mask_width`` consecutive
feature bins and ``num_time_masks`` spans of ``0..max_time_mask_width`` frames set to zero
(features are mean-normalized, so zero is the mean). Adaptive time masks (Park et al. 2020)
scale with the utterance: the count becomes ``floor(time_masks_per_frame * length)`` (capped
by ``num_time_masks``) and the width at most ``time_mask_max_ratio * length``. Masks lie
within each utterance's real frames; padded frames stay zero. Widths and positions are drawn
from a ``torch.Generator`` when one is given, so masks are reproducible.
"""

from __future__ import annotations

import dataclasses

import torch

from seqlab.core.config import param
from seqlab.core.layer import Layer


class SpecAugment(Layer):
    """Random frequency and time masking of [B, T, D] features."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        num_freq_masks: int = param(2, doc="Frequency masks per utterance.")
        max_freq_mask_width: int = param(27, doc="Widest frequency mask (feature bins).")
        num_time_masks: int = param(2, doc="Time masks per utterance (the cap when adaptive).")
        max_time_mask_width: int = param(40, doc="Widest time mask (frames).")
        time_masks_per_frame: float = param(
            0.0, doc="Adaptive count: masks per real frame (0 = always num_time_masks)."
        )
        time_mask_max_ratio: float = param(
            0.0, doc="Adaptive width: at most this fraction of the utterance (0 = off)."
        )

    config: Config

    def mask(
        self, lengths: torch.Tensor, num_frames: int, num_bins: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Draws the masks.

        Args:
          lengths: [B] real frames per utterance.
          num_frames: T.
          num_bins: D.
          generator: source of the random widths and positions.

        Returns:
          [B, T, D] bool, True where a feature is masked.
        """
        c = self.config
        batch = lengths.shape[0]
        masked = torch.zeros(batch, num_frames, num_bins, dtype=torch.bool)
        for row in range(batch):
            length = int(lengths[row])
            for start, width in _spans(
                c.num_freq_masks, c.max_freq_mask_width, num_bins, generator
            ):
                masked[row, :length, start : start + width] = True
            count, max_width = c.num_time_masks, c.max_time_mask_width
            if c.time_masks_per_frame > 0:
                count = min(count, int(c.time_masks_per_frame * length))
            if c.time_mask_max_ratio > 0:
                max_width = min(max_width, int(c.time_mask_max_ratio * length))
            for start, width in _spans(count, max_width, length, generator):
                masked[row, start : start + width] = True
        return masked

    def forward(
        self,
        features: torch.Tensor,
        paddings: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Masks ``features`` [B, T, D] (paddings [B, T], 1.0 = pad) in training mode.

        Returns:
          [B, T, D]; unchanged in eval mode.
        """
        if not self.training:
            return features
        if generator is None:
            # Drawn from the global generator, so the trainer's seed and RNG state fix it.
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        lengths = (1.0 - paddings).sum(dim=1).round().long().cpu()
        masked = self.mask(lengths, features.shape[1], features.shape[2], generator)
        return features.masked_fill(masked.to(features.device), 0.0)


def _spans(
    count: int, max_width: int, size: int, generator: torch.Generator
) -> list[tuple[int, int]]:
    """``count`` (start, width) spans inside ``[0, size)``, width uniform in 0..max_width."""
    spans = []
    for _ in range(count):
        width = int(torch.randint(min(max_width, size) + 1, (), generator=generator))
        start = int(torch.randint(size - width + 1, (), generator=generator))
        spans.append((start, width))
    return spans
