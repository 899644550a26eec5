"""The Conformer-CTC program: torch.export traces the whole model from the waveform on
(``torch.stft`` included) and computes the task's own log-probs for any batch and length in
the range it records."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.layer import lengths_to_paddings
from seqlab.core.registry import get_experiment
from seqlab.export.speech_programs import (
    AUDIO_INPUTS,
    CtcProgram,
    ctc_program_examples,
    sample_range,
)


def test_exported_program_computes_the_tasks_log_probs() -> None:
    torch.manual_seed(0)
    task = get_experiment("asr.flite_bible.conformer_ctc_tiny").task.build().eval()
    inputs, dims = ctc_program_examples(task)
    with torch.no_grad():
        exported = torch.export.export(
            CtcProgram(task), inputs, dynamic_shapes=dict(zip(AUDIO_INPUTS, dims, strict=True))
        )
    fewest, most = sample_range(exported)
    # At least two encoder frames; at most the 4,096 positions of 40 ms (163.84 s).
    assert (fewest, most) == (1040, 2621839)
    program = exported.module()
    generator = torch.Generator().manual_seed(1)
    for lengths in ([23456, 5000], [fewest], [fewest, 1]):
        width = max(lengths)
        audio = 0.1 * torch.randn(len(lengths), width, generator=generator)
        paddings = lengths_to_paddings(torch.tensor(lengths), width)
        with torch.no_grad():
            expected = task.frame_log_probs(audio, paddings)
        got = program(audio, paddings)
        for e, g in zip(expected, got, strict=True):
            assert torch.equal(e, g)
    with pytest.raises(AssertionError, match=">= 1040"):
        program(torch.zeros(1, fewest - 1), torch.zeros(1, fewest - 1))
