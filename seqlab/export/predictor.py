"""The Predictor: translate text with the newest good checkpoint of a logdir."""

from __future__ import annotations

from pathlib import Path

import torch

from seqlab.data.mt_data import MTExamples
from seqlab.train.checkpoint import load_latest_checkpoint
from seqlab.train.run_context import RunContext, build_context, read_logdir_config


class InputTooLargeError(ValueError):
    """An input over the predictor's limits; the message says which limit."""


class Predictor:
    """Loads a trained task from a logdir and decodes raw text with it."""

    def __init__(
        self, context: RunContext, max_batch_size: int = 64, max_input_tokens: int = 256
    ) -> None:
        self.context = context
        self.max_batch_size = max_batch_size
        self.max_input_tokens = max_input_tokens
        context.task.eval()

    @classmethod
    def from_logdir(
        cls, logdir: Path, max_batch_size: int = 64, max_input_tokens: int = 256
    ) -> Predictor:
        """Builds the task of ``logdir`` and loads its newest checkpoint that verifies."""
        config = read_logdir_config(logdir)
        context = build_context(config, logdir, train_tokenizer=False)
        found = load_latest_checkpoint(context.checkpoint_dir)
        if found is None:
            raise FileNotFoundError(f"no usable checkpoint in {context.checkpoint_dir}")
        context.task.load_state_dict(found[1]["model"])
        return cls(context, max_batch_size=max_batch_size, max_input_tokens=max_input_tokens)

    @torch.no_grad()
    def predict(self, texts: list[str]) -> list[str]:
        """Decodes each input text; returns one output string per input.

        Raises:
          InputTooLargeError: more than ``max_batch_size`` texts, or a text longer than
            ``max_input_tokens`` tokens.
        """
        if len(texts) > self.max_batch_size:
            raise InputTooLargeError(
                f"{len(texts)} inputs in one call; the limit is {self.max_batch_size}"
            )
        if not texts:
            return []
        data = self.context.data
        ids = data.tokenizer.encode_batch(texts)
        for i, row in enumerate(ids):
            if len(row) + 1 > self.max_input_tokens:
                raise InputTooLargeError(
                    f"input {i} has {len(row) + 1} tokens; the limit is {self.max_input_tokens}"
                )
        eos = data.tokenizer.processor.eos_id()
        examples = MTExamples(
            source_ids=[row + [eos] for row in ids],
            target_ids=[[] for _ in ids],
            source_text=list(texts),
            target_text=["" for _ in texts],
        )
        batch = data.collate(examples, list(range(len(texts))))
        task = self.context.task
        results = task.process_decode_out(batch, task.decode(batch))
        return [r["hypothesis"] for r in results]
