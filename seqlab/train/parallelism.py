"""Parallelism strategies of the training loop: how parameters are replicated (or split)
across the processes of a job.

A strategy owns wrapping the model for training, the forward and backward pass of a batch
(``forward_backward``), gradient synchronisation during accumulation, reductions of metrics
across ranks, the checkpoint backend, and where the periodic eval and decode run. The loop
(seqlab.train.trainer) is the same for all of them.
``SingleProcess`` (strategy ``none``) is defined here; DDP and FSDP2 live in
seqlab.distributed.strategies, pipeline stages in seqlab.distributed.pipeline_parallel, all
imported only when a torchrun job asks for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from seqlab.core.nested_map import NestedMap
from seqlab.models.base import Metrics, Task
from seqlab.train.checkpoint import (
    IncompatibleCheckpointError,
    load_latest_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from seqlab.train.checkpoint_fit import load_model_state
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.gradient_norm import gradient_norm
from seqlab.train.parallelism_config import ParallelismConfig
from seqlab.train.world import World


class TrainingForward(nn.Module):
    """A task's ``compute_predictions`` and ``compute_loss`` behind ``forward()``.

    DDP prepares its gradient all-reduce, and FSDP2 gathers the root's parameters, in hooks
    around ``forward()``; the Task contract has no forward of its own.
    """

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch: NestedMap) -> tuple[torch.Tensor, Metrics]:
        predictions = self.task.compute_predictions(batch)
        return self.task.compute_loss(batch, predictions)


def to_cpu(tree: Any) -> Any:
    """``tree`` (dicts, lists, tuples of tensors and plain values) with every tensor on the
    CPU, so that a checkpoint written on a GPU loads anywhere; CPU tensors are not copied."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return type(tree)((k, to_cpu(v)) for k, v in tree.items())
    if isinstance(tree, list | tuple):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


class Parallelism:
    """A parallelism strategy. The methods' defaults are those of one process holding the
    whole model (strategy ``none``): collectives are identities, checkpoints one file."""

    name = "none"
    # Whether this rank's batch counts (tokens) enter the totals over ranks: false on ranks
    # that share one batch (pipeline stages other than the last).
    counts_batch: bool = True

    def __init__(self, world: World, device: torch.device) -> None:
        self.world = world
        self.device = device

    # ---- training ------------------------------------------------------------------------
    def wrap(self, task: Task) -> nn.Module:
        """The module whose ``forward(batch)`` returns (loss, metrics); ``task`` keeps its
        parameter names."""
        return TrainingForward(task)

    def prepare_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Adjusts ``optimizer``, built over the wrapped task's parameters, to the strategy."""

    def gradient_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """The context of one accumulated micro-batch's backward; gradients are synchronised
        across ranks only on the ``last``."""
        return contextlib.nullcontext()

    def local_indices(self, global_indices: Sequence[int]) -> list[int]:
        """This process's examples of a global batch."""
        return list(global_indices)

    @property
    def data_parallel_size(self) -> int:
        """How many ranks train on different examples of a global batch (the gradient of
        each is averaged over them)."""
        return self.world.world_size

    @property
    def data_parallel_rank(self) -> int:
        """This rank's place among those ``data_parallel_size`` ranks."""
        return self.world.rank

    def forward_backward(
        self,
        model: nn.Module,
        batch: NestedMap,
        has_examples: bool,
        forward_context: Callable[[], contextlib.AbstractContextManager],
        scale_loss: Callable[[torch.Tensor, float], torch.Tensor],
    ) -> tuple[torch.Tensor, Metrics]:
        """Forward and backward of this rank's slice of one global batch.

        Backpropagates ``scale_loss(loss, share)``, where ``share`` is this slice's share of
        the global batch's loss weight times ``data_parallel_size`` (DDP and FSDP2 average
        gradients over those ranks), or 0 when the global loss is not finite.

        Args:
          model: what ``wrap`` returned.
          batch: this rank's slice (a rank ``has_examples`` or runs one example weighted 0).
          forward_context: the context of the forward pass (autocast).
          scale_loss: (loss, share) -> the tensor to backpropagate (the trainer's
            accumulation and loss-scaler factors applied).

        Returns:
          (the global batch's token-weighted loss, identical on every rank; this rank's
          metrics, as ``Task.compute_loss`` returns them).
        """
        with forward_context():
            loss, metrics = model(batch)
        weight = float(metrics["loss"][1]) if has_examples else 0.0
        local = torch.tensor([float(loss.detach()) * weight, weight], dtype=torch.float64)
        weighted_loss, total_weight = self.sum_over_data(local).tolist()
        global_loss = torch.tensor(weighted_loss / max(total_weight, 1e-12))
        share = weight / max(total_weight, 1e-12) * self.data_parallel_size
        scale_loss(loss, share if torch.isfinite(global_loss) else 0.0).backward()
        return global_loss, metrics

    def gradient_norm(self, params: Sequence[nn.Parameter]) -> torch.Tensor:
        """The L2 norm of all of the model's gradients together (over every rank's; DTensor
        shards and plain gradients alike)."""
        return gradient_norm(params)

    # ---- collectives -----------------------------------------------------------------------
    def all_reduce(self, values: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """``values`` reduced over ranks (``op``: sum or max), in place."""
        return values

    def sum_over_data(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (sums over this rank's examples) summed over the ranks that train on
        different examples, so that each example counts once."""
        return self.all_reduce(values)

    def barrier(self) -> None:
        pass

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Runs the body on rank 0 first (shared caches), then on the other ranks."""
        yield

    def gather_objects(self, value: Any) -> list[Any]:
        return [value]

    # ---- checkpoints -----------------------------------------------------------------------
    def save(
        self,
        directory: Path,
        step: int,
        task: Task,
        optimizer: torch.optim.Optimizer,
        extra: dict[str, Any],
    ) -> Path:
        """Writes one checkpoint file of the model, optimizer and ``extra`` (older ones are
        kept: the trainer prunes them)."""
        state = {"model": task.state_dict(), "optimizer": optimizer.state_dict()}
        return save_checkpoint(directory, step, to_cpu({**extra, **state}))

    def load(
        self, directory: Path, task: Task, optimizer: torch.optim.Optimizer
    ) -> tuple[Path, dict[str, Any]] | None:
        """Loads the newest good checkpoint (a file or a .dcp directory of any world size)
        into ``task`` and ``optimizer``; returns (path, payload), or None if there is none."""
        for path in remove_stale_temporaries(directory):
            tqdm.write(f"[seqlab] removed {path}, left half-written by an interrupted save")
        found = load_latest_checkpoint(directory)
        if found is None:
            return None
        path, payload = found
        try:
            load_model_state(task, payload.get("model"), path, payload.get("config"))
        except IncompatibleCheckpointError as e:
            # Older checkpoints are not tried: they come from the same run as this one.
            raise IncompatibleCheckpointError(
                f"{e}. Older checkpoints are not tried (they come from the same run): train "
                f"this config in a new --logdir, or resume with the config of "
                f"{directory.parent / 'config.txt'} (the logdir's checkpoints and config files "
                f"are left as they were)"
            ) from None
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError) as e:
            raise IncompatibleCheckpointError(
                f"checkpoint {path}: its optimizer state does not fit trainer.optimizer ({e})"
            ) from None
        return path, payload

    # ---- eval and decode -------------------------------------------------------------------
    @contextlib.contextmanager
    def evaluation_task(self, task: Task, config: ExperimentConfig) -> Iterator[Task | None]:
        """The whole task to evaluate, on rank 0 (None on the others, which wait)."""
        yield task

    def close(self) -> None:
        pass


class SingleProcess(Parallelism):
    """Strategy ``none``: one process, the whole model, no collectives."""


def build_parallelism(config: ParallelismConfig, world: World, device: torch.device) -> Parallelism:
    """The strategy ``config`` names for this process: ``SingleProcess`` in one process
    (``auto`` or ``none``), else DDP or FSDP2 from seqlab.distributed (which joins the
    process group)."""
    config.validate("trainer.distributed.")
    if not world.is_distributed:  # one replica (any strategy): nothing to replicate
        return SingleProcess(world, device)
    from seqlab.distributed.strategies import build_distributed_strategy

    return build_distributed_strategy(config, world, device)
