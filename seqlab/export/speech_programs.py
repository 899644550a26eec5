"""The program of a speech recognizer's artifact: audio samples in, per-frame CTC log-probs out.

The whole model from the waveform on is one program: the log-mel front end (``torch.stft``),
the convolutional subsampling, the encoder and the output softmax, through the task's own
``frame_log_probs``. Reading and resampling files and the CTC search (greedy or prefix beam)
stay in the predictor: they are not tensor programs.

The number of samples is a dynamic dim left to ``torch.export`` (``Dim.DYNAMIC``): it narrows
it to the lengths the model accepts (a few encoder frames at least, as many as the position
table holds at most), and the exporter records that range in the manifest.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.export import Dim

from seqlab.core.layer import lengths_to_paddings
from seqlab.export.programs import MAX_ROWS

AUDIO_INPUTS = ("audio", "audio_paddings")
CTC_OUTPUTS = ("log_probs", "paddings")
# The front end's constants (the mel filterbank) as the programs name them: onnxruntime's
# int8 pass keeps the nodes reading them float. Quantized per call, the power spectrum (many
# orders of magnitude) lost the quiet bands: about half of the frames' best labels agreed
# with fp32 on a tiny model, 98% with the filterbank float. (torch int8 quantizes Linear
# layers only.)
FLOAT_IN_ONNX_INT8 = ("task.frontend.",)


class CtcProgram(nn.Module):
    """Audio -> the task's per-frame CTC log-probs."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(
        self, audio: torch.Tensor, audio_paddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Recognizes a padded batch whose longest row is unpadded.

        Args:
          audio: [B, N] float32 samples at the model's rate.
          audio_paddings: [B, N], 1.0 = pad.

        Returns:
          (log_probs [B, T, V] float32, paddings [B, T]).
        """
        return self.task.frame_log_probs(audio, audio_paddings)


def ctc_program_examples(
    task: nn.Module,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[dict[int, Any], dict[int, Any]]]:
    """Example inputs (three rows of one second or less) and their dynamic shapes."""
    rate = task.config.frontend.sample_rate
    device = next(task.parameters()).device
    generator = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(3, rate, generator=generator)
    paddings = lengths_to_paddings(torch.tensor([rate, rate * 3 // 4, rate // 2]), rate)
    rows = Dim("rows", min=1, max=MAX_ROWS)
    dims = {0: rows, 1: Dim.DYNAMIC}
    return (audio.to(device), paddings.to(device)), (dims, dict(dims))


def sample_range(exported: torch.export.ExportedProgram) -> tuple[int, int | None]:
    """The fewest and most (None: no limit) samples per row that the exported CTC program
    accepts."""
    audio = next(n for n in exported.graph.nodes if n.op == "placeholder" and n.name == "audio")
    length = audio.meta["val"].shape[1]
    if isinstance(length, int):
        return length, length
    bounds = exported.range_constraints[length.node.expr]
    return int(bounds.lower), int(bounds.upper) if bounds.upper.is_finite else None
