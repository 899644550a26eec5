"""The Transformer encoder-decoder for machine translation (Vaswani et al. 2017).

One embedding matrix is shared by the source, the target and the output projection, so the
vocabulary is a joint SentencePiece model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sacrebleu
import torch
from torch import nn

from seqlab.core.config import param
from seqlab.core.nested_map import NestedMap
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID
from seqlab.decoding.beam_search import BeamSearch
from seqlab.layers.cross_entropy import LabelSmoothedCrossEntropy
from seqlab.layers.embedding import SinusoidalPositions, TokenEmbedding
from seqlab.layers.transformer import TransformerDecoder, TransformerEncoder
from seqlab.models.base import Metrics, Task


class TransformerMT(Task):
    """Encoder-decoder Transformer Task: teacher-forced loss, beam-search decode, BLEU."""

    @dataclasses.dataclass
    class Config(Task.Config):
        embedding: TokenEmbedding.Config = param(
            TokenEmbedding.Config(), doc="Shared source/target/output embedding."
        )
        positions: SinusoidalPositions.Config = param(
            SinusoidalPositions.Config(), doc="Sinusoidal position encodings."
        )
        input_dropout_prob: float = param(0.1, doc="Dropout on embeddings plus positions.")
        encoder: TransformerEncoder.Config = param(TransformerEncoder.Config(), doc="Encoder.")
        decoder: TransformerDecoder.Config = param(TransformerDecoder.Config(), doc="Decoder.")
        loss: LabelSmoothedCrossEntropy.Config = param(
            LabelSmoothedCrossEntropy.Config(), doc="Training loss."
        )
        beam_search: BeamSearch.Config = param(BeamSearch.Config(), doc="Decoding.")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.embedding = config.embedding.build()
        self.positions = config.positions.build()
        self.input_dropout = nn.Dropout(config.input_dropout_prob)
        self.encoder = config.encoder.build()
        self.decoder = config.decoder.build()
        self.loss = config.loss.build()

    # ---- model ------------------------------------------------------------------------------
    def _embed(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """[B, T] ids -> [B, T, D] embeddings plus positions (starting at ``offset``)."""
        x = self.embedding(ids) + self.positions(ids.shape[1], offset)[None].to(
            self.embedding.weight.dtype
        )
        return self.input_dropout(x)

    def encode(self, src_ids: torch.Tensor, src_paddings: torch.Tensor) -> torch.Tensor:
        """[B, S] ids, [B, S] paddings -> [B, S, D] encoder outputs."""
        return self.encoder(self._embed(src_ids), src_paddings)

    def compute_predictions(self, batch: NestedMap) -> NestedMap:
        """Teacher-forced logits.

        Returns:
          NestedMap(logits [B, T, V]).
        """
        encoded = self.encode(batch.src_ids, batch.src_paddings)
        decoded = self.decoder(
            self._embed(batch.tgt_in_ids), batch.tgt_paddings, encoded, batch.src_paddings
        )
        return NestedMap(logits=self.embedding.logits(decoded))

    def compute_loss(
        self, batch: NestedMap, predictions: NestedMap
    ) -> tuple[torch.Tensor, Metrics]:
        out = self.loss(predictions.logits, batch.tgt_out_ids, batch.tgt_paddings)
        num_tokens = float(out.num_tokens)
        log_pplx = float(out.nll_sum.detach()) / max(num_tokens, 1.0)
        metrics = {
            "loss": (float(out.loss.detach()), num_tokens),
            "log_pplx": (log_pplx, num_tokens),
            "num_target_tokens": (num_tokens, 1.0),
        }
        return out.loss, metrics

    # ---- incremental decoding (the beam search's IncrementalModel) -----------------------------
    def extend_step(
        self, state: NestedMap, ids: torch.Tensor, return_attention: bool | None = None
    ) -> tuple[torch.Tensor, NestedMap, torch.Tensor | None]:
        """[N] last ids -> ([N, V] next-token log-probs, state, [N, S] attention or None).

        Attention probabilities cost an explicit softmax; by default they are computed only
        when the beam search's coverage penalty needs them.
        """
        if return_attention is None:
            return_attention = self.config.beam_search.coverage_penalty_beta > 0
        x = self._embed(ids[:, None], offset=state.step)
        out, state, attention = self.decoder.extend_step(
            state, x, return_attention=return_attention
        )
        log_probs = torch.log_softmax(self.embedding.logits(out[:, 0]).float(), dim=-1)
        return log_probs, state, attention

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return self.decoder.expand_state(state, beam_size)

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        return self.decoder.reorder_state(state, indices)

    def decode(self, batch: NestedMap) -> NestedMap:
        """Beam search.

        Returns:
          NestedMap(ids: list of B hypothesis id lists, scores [B]).
        """
        search = self.config.beam_search.build()
        encoded = self.encode(batch.src_ids, batch.src_paddings)
        source_lengths = (1.0 - batch.src_paddings).sum(dim=1).long()
        hard_cap = self.config.positions.max_length - 1
        num_steps = int(search.max_lengths(source_lengths, hard_cap).max()) + 1
        state = self.decoder.init_state(encoded, batch.src_paddings, num_steps)
        result = search.search(
            self,
            state,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            batch_size=batch.src_ids.shape[0],
            source_lengths=source_lengths,
            max_length=hard_cap,
        )
        return NestedMap(ids=result.best_ids, scores=result.best_scores)

    @torch.no_grad()
    def alignment(self, batch: NestedMap) -> torch.Tensor:
        """Cross-attention of the first example's reference, [T, S] (for images)."""
        src_ids, src_paddings = batch.src_ids[:1], batch.src_paddings[:1]
        source_length = int((1.0 - src_paddings).sum())
        target = batch.tgt_in_ids[0][batch.tgt_paddings[0] == 0]
        was_training = self.training
        self.eval()
        state = self.decoder.init_state(
            self.encode(src_ids, src_paddings), src_paddings, len(target)
        )
        rows = []
        for token in target:
            _, state, attention = self.extend_step(state, token.view(1), return_attention=True)
            rows.append(attention[0, :source_length])
        self.train(was_training)
        return torch.stack(rows)

    # ---- results and metrics ------------------------------------------------------------------
    def process_decode_out(self, batch: NestedMap, decode_out: NestedMap) -> list[dict[str, Any]]:
        tokenizer = self.data.tokenizer
        return [
            {
                "source": source,
                "hypothesis": tokenizer.decode(ids),
                "reference": reference,
                "score": float(score),
            }
            for source, reference, ids, score in zip(
                batch.src_text, batch.tgt_text, decode_out.ids, decode_out.scores, strict=True
            )
        ]

    def decode_metrics(self, results: list[dict[str, Any]]) -> dict[str, float | str]:
        """Corpus BLEU and chrF2 (sacrebleu, default 13a tokenization) with signatures."""
        hypotheses = [r["hypothesis"] for r in results]
        references = [[r["reference"] for r in results]]
        bleu = sacrebleu.metrics.BLEU()
        chrf = sacrebleu.metrics.CHRF()
        bleu_score = bleu.corpus_score(hypotheses, references)
        chrf_score = chrf.corpus_score(hypotheses, references)
        return {
            "bleu": bleu_score.score,
            "chrf": chrf_score.score,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "num_sentences": float(len(results)),
        }
