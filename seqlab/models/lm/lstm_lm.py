"""An LSTM language model (Zaremba et al. 2014; Jozefowicz et al. 2016).

Packed rows are unpacked before the recurrence: every segment runs as a row of its own from
the zero state (:func:`segments_to_rows`), and the outputs are packed back. The state is thus
reset at every segment start without touching the cell, and the recurrence runs over the
longest segment instead of the whole row (fewer sequential steps, more rows per step).
"""

from __future__ import annotations

import dataclasses

import torch

from seqlab.core.config import ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.data.sequence_packing import rows_to_segments, segments_to_rows
from seqlab.layers.dropout import Dropout
from seqlab.layers.embedding import TokenEmbedding
from seqlab.layers.rnn import LSTMStack
from seqlab.models.lm.language_model import LanguageModel


class LSTMLM(LanguageModel):
    """Embedding, a unidirectional LSTM stack, tied output projection."""

    @dataclasses.dataclass
    class Config(LanguageModel.Config):
        embedding: TokenEmbedding.Config = param(
            TokenEmbedding.Config(), doc="Token embedding, shared with the output projection."
        )
        input_dropout_prob: float = param(
            0.1, doc="Dropout on the embeddings.", at_least=0, below=1
        )
        lstm: LSTMStack.Config = param(
            LSTMStack.Config(), doc="The recurrent layers; the top one outputs model_dim."
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        dim = config.embedding.model_dim
        if config.lstm.input_dim != dim:
            raise ConfigError(
                f"lstm.input_dim ({config.lstm.input_dim}) differs from embedding.model_dim "
                f"({dim}); set both the same"
            )
        self.embedding = config.embedding.build()
        self.input_dropout = Dropout(config.input_dropout_prob)
        self.lstm = config.lstm.build()
        if self.lstm.output_dim != dim:
            raise ConfigError(
                f"the LSTM outputs width {self.lstm.output_dim} but the tied output projection "
                f"needs embedding.model_dim ({dim}); set lstm.cell.num_units (or "
                "projection_dim) to it"
            )

    def compute_logits(self, batch: NestedMap) -> torch.Tensor:
        x = self.input_dropout(self.embedding(batch.ids))
        rows, row_paddings = segments_to_rows(x, batch.segment_ids, batch.segment_positions)
        outputs = self.lstm(rows, row_paddings)
        x = rows_to_segments(outputs, batch.segment_ids, batch.segment_positions)
        return self.embedding.logits(x)

    # ---- incremental decoding -----------------------------------------------------------------
    def init_state(self, batch_size: int, max_length: int) -> NestedMap:
        """The zero state of every layer (the recurrence needs no room per step)."""
        return self.lstm.init_state(batch_size)

    def extend_step(
        self, state: NestedMap, ids: torch.Tensor
    ) -> tuple[torch.Tensor, NestedMap, None]:
        """Feeds ids [N]; returns next-token log-probs [N, V]."""
        x = self.input_dropout(self.embedding(ids))
        outputs, state = self.lstm.extend_step(x, x.new_zeros(ids.shape[0]), state)
        return torch.log_softmax(self.embedding.logits(outputs).float(), dim=-1), state, None
