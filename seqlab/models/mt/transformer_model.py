"""The Transformer encoder-decoder for machine translation (Vaswani et al. 2017).

One embedding matrix is shared by the source, the target and the output projection, so the
vocabulary is a joint SentencePiece model.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from seqlab.core.config import ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.layers.dropout import Dropout
from seqlab.layers.embedding import AbsolutePositions, SinusoidalPositions, TokenEmbedding
from seqlab.layers.transformer import TransformerDecoder, TransformerEncoder
from seqlab.models.mt.translation_task import TranslationTask


class TransformerMT(TranslationTask):
    """Encoder-decoder Transformer Task: teacher-forced loss, beam-search decode, BLEU."""

    @dataclasses.dataclass
    class Config(TranslationTask.Config):
        embedding: TokenEmbedding.Config = param(
            TokenEmbedding.Config(), doc="Shared source/target/output embedding."
        )
        positions: AbsolutePositions.Config | None = param(
            SinusoidalPositions.Config(),
            doc="Absolute positions added to the embeddings (SinusoidalPositions or "
            "LearnedPositions), or None when self-attention has relative_positions.",
        )
        input_dropout_prob: float = param(
            0.1, doc="Dropout on embeddings plus positions.", at_least=0, below=1
        )
        encoder: TransformerEncoder.Config = param(TransformerEncoder.Config(), doc="Encoder.")
        decoder: TransformerDecoder.Config = param(TransformerDecoder.Config(), doc="Decoder.")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.embedding = config.embedding.build()
        _check_some_positions(config)
        self.positions = None if config.positions is None else config.positions.build()
        self.input_dropout = Dropout(config.input_dropout_prob)
        self.encoder = config.encoder.build()
        self.decoder = config.decoder.build()

    # ---- model ------------------------------------------------------------------------------
    def _embed(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """[B, T] ids -> [B, T, D] embeddings plus positions (starting at ``offset``)."""
        if self.positions is None:
            return self.input_dropout(self.embedding(ids))
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
        decoder_inputs = self._embed(self._decoder_inputs(batch))
        decoded = self.decoder(decoder_inputs, batch.tgt_paddings, encoded, batch.src_paddings)
        return NestedMap(logits=self.embedding.logits(decoded))

    # ---- incremental decoding (the beam search's IncrementalModel) -----------------------------
    def init_decoder_state(
        self, encoded: torch.Tensor, src_paddings: torch.Tensor, max_length: int
    ) -> NestedMap:
        return self.decoder.init_state(encoded, src_paddings, max_length)

    def max_output_length(self) -> int:
        # Without absolute positions only the beam search's own length limits apply.
        positions = self.config.positions
        return sys.maxsize if positions is None else positions.max_length - 1

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

    def select_examples(self, state: NestedMap, examples: torch.Tensor) -> NestedMap:
        return self.decoder.select_examples(state, examples)


def _check_some_positions(config: TransformerMT.Config) -> None:
    """Without absolute positions, each stack's self-attention needs relative positions."""
    if config.positions is not None:
        return
    for stack in ("encoder", "decoder"):
        if getattr(config, stack).layer.self_attention.relative_positions is None:
            raise ConfigError(
                f"positions = None and {stack}.layer.self_attention.relative_positions = None "
                f"leave the {stack} without any position information; set one of them"
            )
