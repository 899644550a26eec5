"""The pipeline stages of a model: which layers each process keeps, and a module whose
``forward`` runs one stage on a micro-batch (the ``submodule`` of a
``torch.distributed.pipelining.PipelineStage``).

A stage module owns the task pruned to its stage: the layers of other stages become
``nn.Identity`` placeholders in their ``ModuleList`` (so the kept parameters keep the unsplit
model's names) and modules no layer of this stage uses (embedding, positions, final norms)
are dropped. The embedding matrix, shared by the input lookups and the output projection, is
kept by every stage that uses it (``embedding_stages``); their copies sum their gradients.

Stages pass float32 activations (fixed dtypes for the receiving stage's buffers): an LM's
``[b, T, D]``; an encoder-decoder's ``[b, S, D]`` in the encoder, then the encoder output and
the decoder's ``[b, T, D]`` together. The last stage returns the micro-batch's mean loss and
appends its metrics to ``metrics``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from seqlab.core.config import ConfigError
from seqlab.core.layer import apply_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.models.base import Metrics, Task
from seqlab.models.lm.transformer_lm import TransformerLM
from seqlab.models.mt.transformer_model import TransformerMT

ForwardContext = Callable[[], contextlib.AbstractContextManager]


StageSize = Callable[[range], int]


def stage_layers(
    num_layers: int,
    num_stages: int,
    boundaries: Sequence[int],
    stage_size: StageSize = len,
) -> list[range]:
    """The layers of each stage: from ``boundaries`` (the first layer of stages 1, 2, ...) or,
    if empty, the contiguous runs whose largest ``stage_size`` is smallest
    (``balanced_stages``).

    Raises:
      ConfigError: naming the key, when the layers cannot be cut into ``num_stages`` stages.
    """
    key = "trainer.distributed.pipeline_boundaries"
    if num_stages > num_layers:
        raise ConfigError(
            f"trainer.distributed.strategy=pipeline: {num_stages} stages (processes) but the "
            f"model has {num_layers} layers; use at most {num_layers} processes"
        )
    if not boundaries:
        return balanced_stages(num_layers, num_stages, stage_size)
    starts = [0, *boundaries]
    if len(boundaries) != num_stages - 1 or any(
        b <= a for a, b in zip(starts, [*boundaries, num_layers], strict=True)
    ):
        raise ConfigError(
            f"{key}={list(boundaries)}: give {num_stages - 1} increasing layer indices "
            f"between 1 and {num_layers - 1} (the first layer of stages 1 to "
            f"{num_stages - 1}), or leave it empty to balance the stages' parameters"
        )
    ends = [*starts[1:], num_layers]
    return [range(a, b) for a, b in zip(starts, ends, strict=True)]


def balanced_stages(num_layers: int, num_stages: int, stage_size: StageSize) -> list[range]:
    """Layers ``0 .. num_layers - 1`` cut into ``num_stages`` contiguous non-empty runs whose
    largest ``stage_size`` (e.g. the parameters a stage holds) is as small as it can be.

    Exact, by dynamic programming over the cuts (O(stages * layers^2) calls of
    ``stage_size``). Among equally good cuts the later stages take more layers: under 1F1B
    the earlier stages hold more micro-batches' activations.
    """
    if not 1 <= num_stages <= num_layers:
        raise ValueError(f"cannot cut {num_layers} layers into {num_stages} non-empty stages")
    # largest[s][j]: the smallest largest stage over cuts of layers [0, j) into s stages;
    # start[s][j]: where the last of those s stages starts.
    largest = [[float("inf")] * (num_layers + 1) for _ in range(num_stages + 1)]
    start = [[0] * (num_layers + 1) for _ in range(num_stages + 1)]
    largest[0][0] = 0
    for s in range(1, num_stages + 1):
        for j in range(s, num_layers - (num_stages - s) + 1):
            for i in range(s - 1, j):
                value = max(largest[s - 1][i], stage_size(range(i, j)))
                if value < largest[s][j]:
                    largest[s][j], start[s][j] = value, i
    ranges, stop = [], num_layers
    for s in range(num_stages, 0, -1):
        ranges.append(range(start[s][stop], stop))
        stop = start[s][stop]
    return ranges[::-1]


def describe_stages(ranges: Sequence[range], num_parameters: Sequence[int]) -> str:
    """One line: each stage's layers and parameter count."""
    stages = [
        f"{s}: layer{f's {r.start}-{r.stop - 1}' if len(r) > 1 else f' {r.start}'} "
        f"({n:,} parameters)"
        for s, (r, n) in enumerate(zip(ranges, num_parameters, strict=True))
    ]
    return "pipeline stages " + "; ".join(stages)


def _num_parameters(modules: Sequence[nn.Module | None]) -> int:
    """The parameters of ``modules`` (each counted once, however often it is shared)."""
    params = {id(p): p for m in modules if m is not None for p in m.parameters()}
    return sum(p.numel() for p in params.values())


def _drop_layers(layers: nn.ModuleList, keep: Sequence[int]) -> None:
    for i in range(len(layers)):
        if i not in keep:
            layers[i] = nn.Identity()


class StageModule(nn.Module):
    """One stage of a model; subclasses cut a particular model."""

    # The batch fields every stage receives (split into micro-batches along dimension 0),
    # and the one the first stage takes as its positional input.
    batch_fields: tuple[str, ...] = ()
    root_field = ""

    def __init__(
        self, task: Any, ranges: list[range], stage: int, forward_context: ForwardContext
    ) -> None:
        super().__init__()
        self.task = task
        self.layers = ranges[stage]
        self.first, self.last = stage == 0, stage == len(ranges) - 1
        self.forward_context = forward_context
        self.metrics: list[Metrics] = []

    @staticmethod
    def num_layers(task: Any) -> int:
        """The layers to cut into stages (``task`` a model or its config)."""
        raise NotImplementedError

    @classmethod
    def embedding_stages(cls, task: Any, ranges: list[range]) -> list[int]:
        """The stages that keep (a copy of) the shared embedding matrix."""
        return sorted({0, len(ranges) - 1})

    @classmethod
    def num_parameters(cls, task: Any, layers: range) -> int:
        """The parameters a stage of the whole ``task`` keeps with ``layers``: those layers,
        and every module it keeps besides them (a copy of the embedding counted on each
        stage that keeps one)."""
        raise NotImplementedError

    def loss_weight(self, batch: NestedMap) -> float:
        """The loss weight of a whole batch (the task's, as ``compute_loss`` reports it)."""
        raise NotImplementedError

    def boundary_examples(self, batch: NestedMap, rows: int) -> tuple[Any, Any]:
        """(inputs, outputs) of this stage on micro-batches of ``rows`` rows of ``batch``, as
        meta tensors (shapes and dtypes only)."""
        raise NotImplementedError

    def _loss(self, x: torch.Tensor, paddings: torch.Tensor, batch: NestedMap) -> torch.Tensor:
        """The last stage: final activations [b, T, D] -> the micro-batch's mean loss."""
        logits = self.task.embedding.logits(apply_paddings(x, paddings))
        loss, metrics = self.task.compute_loss(batch, NestedMap(logits=logits))
        self.metrics.append(metrics)
        return loss


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta", requires_grad=dtype.is_floating_point)


class TransformerLMStage(StageModule):
    """A range of a TransformerLM's layers; the first stage embeds, the last projects."""

    batch_fields = ("paddings", "segment_ids", "segment_positions", "labels")
    root_field = "ids"

    def __init__(
        self, task: TransformerLM, ranges: list[range], stage: int, forward_context: ForwardContext
    ) -> None:
        super().__init__(task, ranges, stage, forward_context)
        _drop_layers(task.stack.layers, self.layers)
        if not self.first:
            task.positions = None
        if not self.first and not self.last:
            task.embedding = None
        if not self.last:
            task.stack.final_norm = None

    @staticmethod
    def num_layers(task: Any) -> int:
        return (
            task.stack.num_layers
            if isinstance(task, TransformerLM.Config)
            else len(task.stack.layers)
        )

    @classmethod
    def num_parameters(cls, task: Any, layers: range) -> int:
        kept: list[nn.Module | None] = [task.stack.layers[i] for i in layers]
        if layers.start == 0:
            kept += [task.embedding, task.positions]
        if layers.stop == len(task.stack.layers):
            kept += [task.embedding, task.stack.final_norm]
        return _num_parameters(kept)

    def loss_weight(self, batch: NestedMap) -> float:
        return float((1.0 - batch.paddings).sum())

    def boundary_examples(self, batch: NestedMap, rows: int) -> tuple[Any, Any]:
        length, dim = batch.ids.shape[1], self.task.config.stack.layer.model_dim
        inputs = _meta(rows, length, dtype=torch.long) if self.first else _meta(rows, length, dim)
        return inputs, _meta() if self.last else _meta(rows, length, dim)

    def forward(
        self,
        inputs: torch.Tensor,
        paddings: torch.Tensor,
        segment_ids: torch.Tensor,
        segment_positions: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """ids [b, T] (first stage) or activations [b, T, D] -> activations, or the loss."""
        task = self.task
        with self.forward_context():
            x = task._embed(inputs, segment_positions) if self.first else inputs
            for i in self.layers:
                x = task.stack.layers[i](x, paddings, causal=True, segment_ids=segment_ids)
            if not self.last:
                return x.float()
            if task.stack.final_norm is not None:
                x = task.stack.final_norm(x)
            batch = NestedMap(labels=labels, paddings=paddings, num_words=0.0)
            return self._loss(x, paddings, batch)


class TransformerMTStage(StageModule):
    """A range of a TransformerMT's encoder layers then decoder layers (numbered after the
    encoder's); the stage where the decoder begins embeds the target, the last projects."""

    batch_fields = ("src_paddings", "tgt_in_ids", "tgt_out_ids", "tgt_paddings")
    root_field = "src_ids"

    def __init__(
        self, task: TransformerMT, ranges: list[range], stage: int, forward_context: ForwardContext
    ) -> None:
        super().__init__(task, ranges, stage, forward_context)
        self.num_encoder_layers = e = len(task.encoder.layers)
        self.encoder_layers = [i for i in self.layers if i < e]
        self.decoder_layers = [i - e for i in self.layers if i >= e]
        self.embeds_target = self.layers.start <= e < self.layers.stop
        _drop_layers(task.encoder.layers, self.encoder_layers)
        _drop_layers(task.decoder.layers, self.decoder_layers)
        if stage not in self.embedding_stages(task, ranges):
            task.embedding = None
        if not self.first and not self.embeds_target:
            task.positions = None
        if e - 1 not in self.layers:
            task.encoder.final_norm = None
        if not self.last:
            task.decoder.final_norm = None

    @staticmethod
    def num_layers(task: Any) -> int:
        if isinstance(task, TransformerMT.Config):
            return task.encoder.num_layers + task.decoder.num_layers
        return len(task.encoder.layers) + len(task.decoder.layers)

    @classmethod
    def embedding_stages(cls, task: Any, ranges: list[range]) -> list[int]:
        e = len(task.encoder.layers)
        decoder_start = next(s for s, r in enumerate(ranges) if r.start <= e < r.stop)
        return sorted({0, decoder_start, len(ranges) - 1})

    @classmethod
    def num_parameters(cls, task: Any, layers: range) -> int:
        e, d = len(task.encoder.layers), len(task.decoder.layers)
        kept: list[nn.Module | None] = [
            task.encoder.layers[i] if i < e else task.decoder.layers[i - e] for i in layers
        ]
        if layers.start == 0 or layers.start <= e < layers.stop:  # embeds the source, target
            kept += [task.embedding, task.positions]
        if e - 1 in layers:
            kept.append(task.encoder.final_norm)
        if layers.stop == e + d:
            kept += [task.embedding, task.decoder.final_norm]
        return _num_parameters(kept)

    def loss_weight(self, batch: NestedMap) -> float:
        return float((1.0 - batch.tgt_paddings).sum())

    def boundary_examples(self, batch: NestedMap, rows: int) -> tuple[Any, Any]:
        source, target = batch.src_ids.shape[1], batch.tgt_in_ids.shape[1]
        dim, e = self.task.config.embedding.model_dim, self.num_encoder_layers
        if self.first:
            inputs: Any = _meta(rows, source, dtype=torch.long)
        elif self.layers.start <= e:
            inputs = _meta(rows, source, dim)
        else:
            inputs = (_meta(rows, source, dim), _meta(rows, target, dim))
        if self.last:
            outputs: Any = _meta()
        elif self.layers.stop <= e:
            outputs = _meta(rows, source, dim)
        else:
            outputs = (_meta(rows, source, dim), _meta(rows, target, dim))
        return inputs, outputs

    def forward(
        self,
        *inputs: torch.Tensor,
        src_paddings: torch.Tensor,
        tgt_in_ids: torch.Tensor,
        tgt_out_ids: torch.Tensor,
        tgt_paddings: torch.Tensor,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """src ids [b, S] (first stage), encoder activations [b, S, D], or (encoder output
        [b, S, D], decoder activations [b, T, D]) -> the same for the next stage, or the
        loss."""
        task, e = self.task, self.num_encoder_layers
        with self.forward_context():
            if self.first:
                x = task._embed(inputs[0])
            elif self.layers.start < e:
                (x,) = inputs
            elif self.layers.start == e:
                (encoded,) = inputs
            else:
                encoded, y = inputs
                encoded = encoded.view_as(encoded)  # passed on, and its gradient back
            for i in self.encoder_layers:
                x = task.encoder.layers[i](x, src_paddings)
            if e - 1 in self.layers:
                if task.encoder.final_norm is not None:
                    x = task.encoder.final_norm(x)
                encoded = apply_paddings(x, src_paddings)
            if self.layers.stop <= e:
                return encoded.float() if self.layers.stop == e else x.float()
            if self.embeds_target:
                y = task._embed(task._decoder_inputs(NestedMap(tgt_in_ids=tgt_in_ids)))
            for j in self.decoder_layers:
                y = task.decoder.layers[j](y, tgt_paddings, encoded, src_paddings)
            if not self.last:
                return encoded.float(), y.float()
            if task.decoder.final_norm is not None:
                y = task.decoder.final_norm(y)
            batch = NestedMap(tgt_out_ids=tgt_out_ids, tgt_paddings=tgt_paddings)
            return self._loss(y, tgt_paddings, batch)


STAGE_MODULES: dict[type, type[StageModule]] = {
    TransformerLM: TransformerLMStage,
    TransformerMT: TransformerMTStage,
}


def stage_module_for(task: Task | Any) -> type[StageModule]:
    """The stage module of a task or its config.

    Raises:
      ConfigError: for a model the pipeline cannot cut.
    """
    for model, module in STAGE_MODULES.items():
        if isinstance(task, model | model.Config):
            return module
    names = " and ".join(model.__name__ for model in STAGE_MODULES)
    raise ConfigError(
        f"trainer.distributed.strategy=pipeline supports {names} only, not "
        f"{type(task).__qualname__.removesuffix('.Config')}; use ddp or fsdp"
    )
