"""RNMT+ and the hybrid of Chen et al. 2018 ("The Best of Both Worlds") for translation.

The decoder is always the RNMT+ decoder; the encoder is a config choice: a bidirectional LSTM
stack (RNMT+) or a Transformer encoder stack (the paper's hybrid, which needs
``source_positions``). One embedding matrix is shared by the source, the target and the
output projection, so the vocabulary is a joint SentencePiece model.
"""

from __future__ import annotations

import dataclasses

import torch

from seqlab.core.config import ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.layers.dropout import Dropout
from seqlab.layers.embedding import AbsolutePositions, TokenEmbedding
from seqlab.layers.rnn import BidirectionalLSTMStack
from seqlab.layers.transformer import TransformerEncoder
from seqlab.models.mt.rnmt_decoder import RNMTDecoder
from seqlab.models.mt.translation_task import TranslationTask


class RNMTPlusMT(TranslationTask):
    """RNMT+ (or hybrid) Task: teacher-forced loss, beam-search decode, BLEU."""

    @dataclasses.dataclass
    class Config(TranslationTask.Config):
        embedding: TokenEmbedding.Config = param(
            TokenEmbedding.Config(), doc="Shared source/target/output embedding."
        )
        source_positions: AbsolutePositions.Config | None = param(
            None, doc="Absolute positions added to the source (a Transformer encoder needs them)."
        )
        input_dropout_prob: float = param(
            0.1, doc="Dropout on the embedded source and target.", at_least=0, below=1
        )
        encoder: BidirectionalLSTMStack.Config | TransformerEncoder.Config = param(
            BidirectionalLSTMStack.Config(), doc="Encoder: bidirectional LSTM or Transformer."
        )
        decoder: RNMTDecoder.Config = param(RNMTDecoder.Config(), doc="RNMT+ decoder.")
        max_decode_length: int = param(
            1023, doc="Hard cap on the output tokens of a hypothesis (EOS not counted).", at_least=1
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.embedding = config.embedding.build()
        self.source_positions = (
            None if config.source_positions is None else config.source_positions.build()
        )
        self.input_dropout = Dropout(config.input_dropout_prob)
        self.encoder = config.encoder.build()
        self.decoder = config.decoder.build()
        self._check_dims()

    def _check_dims(self) -> None:
        config = self.config
        model_dim = config.embedding.model_dim
        attention = config.decoder.attention
        encoder = config.encoder
        if isinstance(encoder, TransformerEncoder.Config):
            encoder_input_dim = encoder_output_dim = encoder.layer.model_dim
            if config.source_positions is None:
                raise ConfigError(
                    "RNMTPlusMT with a Transformer encoder needs source_positions (e.g. a "
                    "SinusoidalPositions.Config); it has no other notion of word order"
                )
        else:
            encoder_input_dim, encoder_output_dim = encoder.input_dim, self.encoder.output_dim
        dims = {
            "encoder input width": (encoder_input_dim, model_dim),
            "decoder.input_dim": (config.decoder.input_dim, model_dim),
            "decoder.output_dim": (config.decoder.output_dim, model_dim),
            "decoder.attention.source_dim": (attention.source_dim, encoder_output_dim),
            "decoder.attention.value_dim": (attention.value_dim, encoder_output_dim),
        }
        if config.source_positions is not None:
            dims["source_positions.model_dim"] = (config.source_positions.model_dim, model_dim)
        for key, (value, expected) in dims.items():
            if value != expected:
                raise ConfigError(
                    f"RNMTPlusMT: {key} is {value} but must be {expected} (embedding.model_dim "
                    f"= {model_dim}, encoder output width = {encoder_output_dim})"
                )

    # ---- model ------------------------------------------------------------------------------
    def encode(self, src_ids: torch.Tensor, src_paddings: torch.Tensor) -> torch.Tensor:
        """[B, S] ids, [B, S] paddings -> [B, S, E] encoder outputs."""
        x = self.embedding(src_ids)
        if self.source_positions is not None:
            x = x + self.source_positions(src_ids.shape[1])[None].to(x.dtype)
        return self.encoder(self.input_dropout(x), src_paddings)

    def compute_predictions(self, batch: NestedMap) -> NestedMap:
        """Teacher-forced logits.

        Returns:
          NestedMap(logits [B, T, V]).
        """
        encoded = self.encode(batch.src_ids, batch.src_paddings)
        targets = self.input_dropout(self.embedding(self._decoder_inputs(batch)))
        decoded = self.decoder(targets, batch.tgt_paddings, encoded, batch.src_paddings)
        return NestedMap(logits=self.embedding.logits(decoded))

    # ---- incremental decoding (the beam search's IncrementalModel) -----------------------------
    def init_decoder_state(
        self, encoded: torch.Tensor, src_paddings: torch.Tensor, max_length: int
    ) -> NestedMap:
        """The decoder state; a recurrent state needs no ``max_length`` preallocation."""
        return self.decoder.init_state(encoded, src_paddings)

    def max_output_length(self) -> int:
        return self.config.max_decode_length

    def extend_step(
        self, state: NestedMap, ids: torch.Tensor, return_attention: bool | None = None
    ) -> tuple[torch.Tensor, NestedMap, torch.Tensor | None]:
        """[N] last ids -> ([N, V] next-token log-probs, state, [N, S] attention probs).

        The attention probabilities come for free with every step, so they are always
        returned, whatever ``return_attention`` asks.
        """
        step_inputs = self.input_dropout(self.embedding(ids))
        out, state, attention = self.decoder.extend_step(state, step_inputs)
        log_probs = torch.log_softmax(self.embedding.logits(out).float(), dim=-1)
        return log_probs, state, attention

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return self.decoder.expand_state(state, beam_size)

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        return self.decoder.reorder_state(state, indices)

    def select_examples(self, state: NestedMap, examples: torch.Tensor) -> NestedMap:
        return self.decoder.select_examples(state, examples)
