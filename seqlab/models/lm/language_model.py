"""What every language model shares: loss, perplexity metrics, and sampled continuations.

A model subclasses :class:`LanguageModel` and provides the network: ``compute_logits`` over a
packed batch (see :mod:`seqlab.data.sequence_packing`; nothing may cross a segment boundary),
and ``init_state`` / ``extend_step`` for incremental decoding (with ``expand_state`` and
``reorder_state`` from here, a language model is an
:class:`~seqlab.decoding.step_model.IncrementalModel`).

Metrics. ``log_pplx`` is the mean negative log-likelihood (nats) per target token, EOS
included; ``log_pplx_per_word`` is the same total divided by the number of words, the
whitespace-separated words of each line plus one for its end of sentence (the Penn Treebank /
WikiText convention, where ``<eos>`` is a word); ``pplx`` and ``pplx_per_word`` are their
exponentials over the whole dataset. Decoding samples a continuation of each prompt and scores
every line, so decode results carry the same corpus-level perplexities.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch.nn import functional as F

from seqlab.core.config import param
from seqlab.core.nested_map import NestedMap
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID
from seqlab.decoding.sampling import Sampler
from seqlab.layers.cross_entropy import LabelSmoothedCrossEntropy
from seqlab.models.base import Metrics, Task


class LanguageModel(Task):
    """Next-token loss, per-token and per-word perplexity, sampled continuations."""

    @dataclasses.dataclass
    class Config(Task.Config):
        loss: LabelSmoothedCrossEntropy.Config = param(
            LabelSmoothedCrossEntropy.Config(label_smoothing=0.0), doc="Training loss."
        )
        sampler: Sampler.Config = param(Sampler.Config(), doc="Decoding: continuations.")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.loss = config.loss.build()

    # ---- what a model provides ----------------------------------------------------------------
    def compute_logits(self, batch: NestedMap) -> torch.Tensor:
        """Next-token logits [B, T, V] of a packed batch (``ids``, ``paddings``,
        ``segment_ids``, ``segment_positions``)."""
        raise NotImplementedError

    def init_state(self, batch_size: int, max_length: int) -> NestedMap:
        """The state before BOS for ``batch_size`` rows and up to ``max_length`` steps."""
        raise NotImplementedError

    def extend_step(
        self, state: NestedMap, ids: torch.Tensor
    ) -> tuple[torch.Tensor, NestedMap, None]:
        """[N] last ids -> ([N, V] next-token log-probs, state, None)."""
        raise NotImplementedError

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        """Gathers the rows ``indices`` [M] of a state of N rows (every tensor in a language
        model's state is batch-major; other leaves, such as a step count, are shared)."""
        return state.transform(
            lambda v: v.index_select(0, indices) if isinstance(v, torch.Tensor) else v
        )

    def concat_states(self, states: list[NestedMap]) -> NestedMap:
        """One state of the rows of ``states``, in order (states at the same step: every
        tensor is batch-major and concatenated; other leaves are those of the first)."""
        leaves = [dict(state.flatten()) for state in states]
        return states[0].with_leaves(
            {
                key: torch.cat([leaf[key] for leaf in leaves])
                if isinstance(value, torch.Tensor)
                else value
                for key, value in leaves[0].items()
            }
        )

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        """K copies of each of the B rows: row ``b * K + k`` is row b."""
        rows = next(v for _, v in state.flatten() if isinstance(v, torch.Tensor))
        indices = torch.arange(rows.shape[0], device=rows.device)
        return self.reorder_state(state, indices.repeat_interleave(beam_size))

    # ---- loss and metrics ---------------------------------------------------------------------
    def compute_predictions(self, batch: NestedMap) -> NestedMap:
        """Returns NestedMap(logits [B, T, V])."""
        return NestedMap(logits=self.compute_logits(batch))

    def compute_loss(
        self, batch: NestedMap, predictions: NestedMap
    ) -> tuple[torch.Tensor, Metrics]:
        out = self.loss(predictions.logits, batch.labels, batch.paddings)
        num_tokens = float(out.num_tokens)
        nll_sum = float(out.nll_sum.detach())
        metrics = {
            "loss": (float(out.loss.detach()), num_tokens),
            "log_pplx": (nll_sum / max(num_tokens, 1.0), num_tokens),
            "num_target_tokens": (num_tokens, 1.0),
        }
        num_words = float(batch.num_words)
        if num_words > 0:
            metrics["log_pplx_per_word"] = (nll_sum / num_words, num_words)
        return out.loss, metrics

    def finalize_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Adds ``pplx`` and ``pplx_per_word``: exponentials of the dataset's mean log-pplx."""
        out = dict(means)
        for name in ("log_pplx", "log_pplx_per_word"):
            if name in means:
                out[name.removeprefix("log_")] = math.exp(min(means[name], 700.0))
        return out

    # ---- decoding -----------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, batch: NestedMap) -> NestedMap:
        """Samples a continuation of every row's prompt and scores every row.

        Returns:
          NestedMap(ids: B continuation id lists; nll [B] summed over each row's tokens;
          num_tokens [B]; num_words [B] per row, words plus EOS).
        """
        tokenizer = self.data.tokenizer
        prompts = tokenizer.encode_batch(list(batch.prompt_texts))
        sampler = self.config.sampler.build()
        state = self.init_state(len(prompts), sampler.num_steps(prompts))
        continuations = sampler.sample(self, state, prompts, BOS_ID, EOS_ID)
        log_probs = F.log_softmax(self.compute_logits(batch).float(), dim=-1)
        real = batch.paddings < 0.5
        token_log_probs = log_probs.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)
        return NestedMap(
            ids=continuations,
            prompt_ids=prompts,
            nll=-(token_log_probs * real).sum(dim=1),
            num_tokens=real.sum(dim=1),
            num_words=torch.tensor([len(t.split()) + 1 for t in batch.texts]),
        )

    def process_decode_out(self, batch: NestedMap, decode_out: NestedMap) -> list[dict[str, Any]]:
        """Per row: prompt, ``hypothesis`` (the continuation), ``text`` (prompt and
        continuation detokenized together), the true continuation and the row's scores."""
        tokenizer = self.data.tokenizer
        return [
            {
                "prompt": prompt,
                "hypothesis": tokenizer.decode(ids),
                "text": tokenizer.decode(prompt_ids + ids),
                "reference": reference,
                "nll": float(nll),
                "num_tokens": int(num_tokens),
                "num_words": int(num_words),
            }
            for prompt, reference, ids, prompt_ids, nll, num_tokens, num_words in zip(
                batch.prompt_texts,
                batch.reference_texts,
                decode_out.ids,
                decode_out.prompt_ids,
                decode_out.nll,
                decode_out.num_tokens,
                decode_out.num_words,
                strict=True,
            )
        ]

    def decode_metrics(self, results: list[dict[str, Any]]) -> dict[str, float | str]:
        """Corpus perplexities of the decoded lines and statistics of the continuations."""
        nll = sum(r["nll"] for r in results)
        tokens = max(sum(r["num_tokens"] for r in results), 1)
        words = max(sum(r["num_words"] for r in results), 1)
        continuation_words = [r["hypothesis"].split() for r in results]
        bigrams = [tuple(w[i : i + 2]) for w in continuation_words for i in range(len(w) - 1)]
        return {
            "log_pplx": nll / tokens,
            "pplx": math.exp(min(nll / tokens, 700.0)),
            "log_pplx_per_word": nll / words,
            "pplx_per_word": math.exp(min(nll / words, 700.0)),
            "continuation_words": sum(map(len, continuation_words)) / max(len(results), 1),
            "distinct_2": len(set(bigrams)) / max(len(bigrams), 1),
            "num_sentences": float(len(results)),
        }
