"""Shallow fusion: a language model's weighted log-probs added to a recognizer's scores.

A search with fusion ranks a hypothesis Y of the input X by (Gulcehre et al. 2015; Hannun et
al. 2014)

    log P_model(Y | X) + weight * log P_lm(Y) + length_bonus * |Y|

The language model reads the recognizer's labels: :func:`label_map` maps each output label
to the language model's token with the same piece, so the two tokenizers need the same pieces
(in any order). The language model starts every hypothesis from BOS.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from seqlab.core.config import Config, ConfigError, Configurable, param
from seqlab.core.nested_map import NestedMap
from seqlab.data.sentencepiece_tokenizer import BOS_ID, SentencePieceTokenizer

if TYPE_CHECKING:
    from seqlab.models.lm.language_model import LanguageModel


def label_map(
    labels: SentencePieceTokenizer, lm: SentencePieceTokenizer, num_labels: int
) -> torch.Tensor:
    """[num_labels] long: the language model's token id of each output label's piece.

    Labels past the label tokenizer (a model may have more outputs than its tokenizer has
    pieces; they never occur in training targets) map to the language model's unknown token.

    Raises:
      ConfigError: the two tokenizers have different pieces (names a few of them).
    """
    label_pieces = {labels.processor.id_to_piece(i) for i in range(labels.vocab_size)}
    lm_pieces = {lm.processor.id_to_piece(i) for i in range(lm.vocab_size)}
    if label_pieces != lm_pieces:
        only_labels = sorted(label_pieces - lm_pieces)[:5]
        only_lm = sorted(lm_pieces - label_pieces)[:5]
        raise ConfigError(
            f"task.lm_fusion: the language model's tokenizer has other pieces than the "
            f"recognizer's (only the recognizer's: {only_labels}; only the language model's: "
            f"{only_lm}); train the language model with "
            "--set data.tokenizer.model_path=<recognizer logdir>/spm.model"
        )
    unknown = lm.processor.unk_id()
    ids = [
        lm.processor.piece_to_id(labels.processor.id_to_piece(i))
        if i < labels.vocab_size
        else unknown
        for i in range(num_labels)
    ]
    return torch.tensor(ids, dtype=torch.long)


class LMFusion(Configurable):
    """A language model that scores a recognizer's labels, with the fusion weights."""

    @dataclasses.dataclass
    class Config(Config):
        """Shallow fusion of a trained language model (see the module docstring)."""

        lm_logdir: str = param(
            "",
            doc="Logdir of a trained language model (an lm.* experiment) whose tokenizer has "
            "the recognizer's pieces; empty = no fusion.",
        )
        checkpoint: str = param(
            "", doc="Step or file of the language model's checkpoint; empty = its newest."
        )
        weight: float = param(
            0.5, doc="weight * log P_lm(token) is added to every token's score.", at_least=0
        )
        length_bonus: float = param(
            0.0,
            doc="Added to the score of every emitted token; offsets the language model's "
            "preference for short outputs.",
            at_least=0,
        )

    def __init__(self, config: Config, lm: LanguageModel, label_to_lm: torch.Tensor) -> None:
        """``lm``: the language model (in eval mode); ``label_to_lm``: [V] its token id of
        each of the recognizer's V labels (:func:`label_map`)."""
        self.config = config
        self.weight = config.weight
        self.length_bonus = config.length_bonus
        self.lm = lm.eval()
        self.label_to_lm = label_to_lm.to(next(lm.parameters()).device)

    def init_state(self, batch_size: int, max_length: int) -> NestedMap:
        """The language model's state before BOS, with room for ``max_length`` tokens."""
        return self.lm.init_state(batch_size, max_length + 1)

    @torch.no_grad()
    def extend_step(self, state: NestedMap, labels: torch.Tensor) -> tuple[torch.Tensor, NestedMap]:
        """Feeds one label per row (BOS first).

        Args:
          state: the language model's state of N rows.
          labels: [N] long, the recognizer's label ids.

        Returns:
          ([N, V] weight * log P_lm(next label) over the recognizer's V labels, new state).
        """
        ids = self.label_to_lm[labels.to(self.label_to_lm.device)]
        log_probs, state, _ = self.lm.extend_step(state, ids)
        return self.weight * log_probs[:, self.label_to_lm], state

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        """Rows ``indices`` [M] of a state of N rows."""
        return self.lm.reorder_state(state, indices.to(self.label_to_lm.device))

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        """K copies of each row, row ``b * K + k`` from row b."""
        return self.lm.expand_state(state, beam_size)

    def concat_states(self, states: list[NestedMap]) -> NestedMap:
        """The rows of ``states`` (at one step) in one state, in order."""
        return self.lm.concat_states(states)

    def start(self, batch_size: int, max_length: int) -> tuple[torch.Tensor, NestedMap]:
        """State after BOS for ``batch_size`` rows, and the [N, V] scores of the first label."""
        bos = torch.full((batch_size,), BOS_ID, dtype=torch.long)
        return self.extend_step(self.init_state(batch_size, max_length), bos)
