"""Shared pieces of the quantization tests: a tiny MT model, a batch, a QAT config."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from seqlab.core.nested_map import NestedMap
from seqlab.core.registry import get_experiment
from seqlab.data.mt_data import MTExamples, collate
from seqlab.quant.clipping_schedule import ClippingSchedule
from seqlab.quant.qat import QuantizationConfig, build_task


@pytest.fixture
def qat_config() -> QuantizationConfig:
    """Clipping from step 2 to 4 (cap 8 -> 4), fake quantization from step 6."""
    return QuantizationConfig(
        mode="qat",
        schedule=ClippingSchedule.Config(
            clip_start_step=2, clip_end_step=4, quant_start_step=6, start_cap=8.0, end_cap=4.0
        ),
    )


@pytest.fixture
def tiny_mt() -> Callable[[QuantizationConfig], nn.Module]:
    """Builds transformer_tiny's task (seed 0) with a quantization config applied."""

    def build(quant: QuantizationConfig) -> nn.Module:
        torch.manual_seed(0)
        return build_task(get_experiment("mt.bible_en_es.transformer_tiny").task, quant)

    return build


@pytest.fixture
def tiny_batch() -> NestedMap:
    rows = [[10, 11, 12, 13, 14], [20, 21, 22]]
    targets = [[5, 6, 7, 8, 9, 10], [30, 31, 32]]
    examples = MTExamples([r + [3] for r in rows], targets, ["s"] * 2, ["t"] * 2)
    return collate(examples, [0, 1])


@pytest.fixture
def log_probs() -> Callable[[nn.Module, NestedMap], torch.Tensor]:
    """Teacher-forced next-token log-probs [B, T, V] of a task on a batch."""

    def compute(task: nn.Module, batch: NestedMap) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(task.compute_predictions(batch).logits, dim=-1)

    return compute
