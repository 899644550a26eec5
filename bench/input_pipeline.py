"""Throughput of the MT input pipeline: raw text -> tokenized, bucketed, padded batches.

Times exactly what a training run does with its data, through the same objects
(``MTData`` of the experiment's data config): reading the training file, SentencePiece
tokenization of both sides, the length-bucketed batch stream of one epoch, and collating every
batch into padded tensors. The tokenizer is loaded (or trained once) before timing.

Tokens are counted as the trainer counts them: real (unpadded) source plus target positions.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from seqlab.data.mt_data import MTData


@dataclasses.dataclass
class PipelineResult:
    """One timed pass over the training split."""

    seconds: float
    tokens: int
    examples: int
    batches: int
    read_and_tokenize_seconds: float
    batch_and_collate_seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def prepared_data(data_config: MTData.Config) -> MTData:
    """The experiment's data with its corpus prepared and its tokenizer loaded (untimed)."""
    data = data_config.build()
    data.load_tokenizer()
    return data


def time_input_pipeline(
    data: MTData, seed: int = 0, clock: Callable[[], float] = time.perf_counter
) -> PipelineResult:
    """Reads, tokenizes, batches and collates one epoch of the training split.

    Args:
      data: from ``prepared_data``.
      seed: of the batch stream.
      clock: the clock the training steps it is compared with are timed by.
    """
    start = clock()
    examples = data.examples("train")
    tokenized = clock()
    stream = data.train_stream(examples, seed)
    tokens = batches = 0
    while stream.epoch == 0:
        indices = next(stream)
        if stream.epoch != 0:  # the stream rolled over into the next epoch
            break
        batch: Any = data.collate(examples, indices)
        tokens += int((batch.src_paddings < 0.5).sum()) + int((batch.tgt_paddings < 0.5).sum())
        batches += 1
    end = clock()
    return PipelineResult(
        seconds=end - start,
        tokens=tokens,
        examples=len(examples),
        batches=batches,
        read_and_tokenize_seconds=tokenized - start,
        batch_and_collate_seconds=end - tokenized,
    )
