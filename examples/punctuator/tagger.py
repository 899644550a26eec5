"""The punctuator task: a Transformer encoder tags every word with its case and the
punctuation mark after it.

It implements seqlab's Task contract (``seqlab.models.base.Task``), so seqlab's trainer,
evaler, decoder and ``seqlab infer`` run it unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from seqlab.core.config import param
from seqlab.core.nested_map import NestedMap
from seqlab.layers.embedding import SinusoidalPositions, TokenEmbedding
from seqlab.layers.linear import Linear
from seqlab.layers.transformer import TransformerEncoder
from seqlab.models.base import Metrics, Task

from .labels import CASES, PUNCTUATION, restore


class PunctuatorTagger(Task):
    """Pieces -> embeddings + positions -> Transformer encoder -> two classifiers per piece."""

    @dataclasses.dataclass
    class Config(Task.Config):
        embedding: TokenEmbedding.Config = param(TokenEmbedding.Config(), doc="Piece embedding.")
        positions: SinusoidalPositions.Config = param(
            SinusoidalPositions.Config(), doc="Absolute positions added to the embeddings."
        )
        input_dropout_prob: float = param(0.1, doc="Dropout on embeddings plus positions.")
        encoder: TransformerEncoder.Config = param(
            TransformerEncoder.Config(), doc="Bidirectional encoder: a word sees its neighbours."
        )
        case_head: Linear.Config = param(
            Linear.Config(output_dim=len(CASES)), doc="Encoder output -> case logits."
        )
        mark_head: Linear.Config = param(
            Linear.Config(output_dim=len(PUNCTUATION)), doc="Encoder output -> mark logits."
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.embedding = config.embedding.build()
        self.positions = config.positions.build()
        self.input_dropout = nn.Dropout(config.input_dropout_prob)
        self.encoder = config.encoder.build()
        self.case_head = config.case_head.build()
        self.mark_head = config.mark_head.build()

    def compute_predictions(self, batch: NestedMap) -> NestedMap:
        """Returns NestedMap(cases [B, T, 3], marks [B, T, 7]) logits at every piece."""
        x = self.embedding(batch.ids) + self.positions(batch.ids.shape[1])[None]
        x = self.encoder(self.input_dropout(x), batch.paddings)
        return NestedMap(cases=self.case_head(x), marks=self.mark_head(x))

    def compute_loss(
        self, batch: NestedMap, predictions: NestedMap
    ) -> tuple[torch.Tensor, Metrics]:
        """Cross entropy of both labels at every word's last piece, averaged over words."""
        weights = batch.label_weights
        num_words = weights.sum().clamp(min=1.0)
        loss = torch.zeros(())
        metrics: Metrics = {}
        for name in ("cases", "marks"):
            logits = predictions[name].float()
            nll = F.cross_entropy(logits.transpose(1, 2), batch[name], reduction="none")
            loss = loss + (nll * weights).sum() / num_words
            correct = (logits.argmax(-1) == batch[name]).float()
            metrics[f"{name}_accuracy"] = (float((correct * weights).sum() / num_words), 1.0)
        words = float(num_words)
        metrics = {k: (v, words) for k, (v, _) in metrics.items()}
        metrics["loss"] = (float(loss.detach()), words)
        return loss, metrics

    @torch.no_grad()
    def decode(self, batch: NestedMap) -> NestedMap:
        """Returns NestedMap(cases, marks): per sentence, the predicted label of each word."""
        predictions = self.compute_predictions(batch)
        word_ends = batch.label_weights > 0.5
        out = NestedMap(cases=[], marks=[])
        for name in ("cases", "marks"):
            best = predictions[name].argmax(-1)
            out[name] = [best[row][word_ends[row]].tolist() for row in range(best.shape[0])]
        return out

    def process_decode_out(self, batch: NestedMap, decode_out: NestedMap) -> list[dict[str, Any]]:
        """Per sentence: the input, the restored ``hypothesis``, the original, the labels."""
        results = []
        for row, words in enumerate(batch.words):
            word_ends = batch.label_weights[row] > 0.5
            results.append(
                {
                    "source": " ".join(words),
                    "hypothesis": restore(words, decode_out.cases[row], decode_out.marks[row]),
                    "reference": batch.originals[row],
                    "cases": decode_out.cases[row],
                    "marks": decode_out.marks[row],
                    "reference_cases": batch.cases[row][word_ends].tolist(),
                    "reference_marks": batch.marks[row][word_ends].tolist(),
                }
            )
        return results

    def decode_metrics(self, results: list[dict[str, Any]]) -> dict[str, float | str]:
        """Punctuation precision, recall and F1 (a mark counts where one is predicted or
        expected), case accuracy, and the fraction of sentences restored exactly."""
        true_positive = predicted = expected = correct_cases = words = exact = 0
        for r in results:
            pairs = list(zip(r["marks"], r["reference_marks"], strict=True))
            true_positive += sum(1 for p, e in pairs if p == e != 0)
            predicted += sum(1 for p, _ in pairs if p != 0)
            expected += sum(1 for _, e in pairs if e != 0)
            correct_cases += sum(map(int.__eq__, r["cases"], r["reference_cases"]))
            words += len(pairs)
            exact += r["marks"] == r["reference_marks"] and r["cases"] == r["reference_cases"]
        precision = true_positive / max(predicted, 1)
        recall = true_positive / max(expected, 1)
        return {
            "punctuation_precision": precision,
            "punctuation_recall": recall,
            "punctuation_f1": 2 * precision * recall / max(precision + recall, 1e-9),
            "case_accuracy": correct_cases / max(words, 1),
            "sentence_accuracy": exact / max(len(results), 1),
            "num_sentences": float(len(results)),
        }
