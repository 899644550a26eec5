"""Shallow fusion: a language model that prefers a word turns CTC prefix beam search and
attention beam search towards it; weight 0 changes nothing; prefix states stay exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from seqlab.core.config import ConfigError
from seqlab.core.nested_map import NestedMap
from seqlab.data.sentencepiece_tokenizer import (
    BOS_ID,
    EOS_ID,
    SentencePieceTokenizer,
    train_or_load_sentencepiece,
)
from seqlab.decoding.beam_search import BeamSearch
from seqlab.decoding.ctc import ctc_beam_decode, ctc_prefix_beam_search
from seqlab.decoding.fused_model import FusedModel
from seqlab.decoding.lm_fusion import LMFusion, label_map
from seqlab.decoding.prefix_lm_scorer import PrefixLMScorer
from seqlab.experiments.lm.bible_en import lstm_lm_config, transformer_lm_config
from seqlab.models.lm.language_model import LanguageModel

BLANK, C, A, T, R = 0, 4, 5, 6, 7
V = 8


def _table(rows: dict[int, dict[int, float]]) -> Tensor:
    """[V, V] next-token probabilities: the given ones, the rest of each row spread evenly."""
    table = torch.zeros(V, V)
    for token in range(V):
        given = rows.get(token, {EOS_ID: 0.9})
        rest = (1.0 - sum(given.values())) / (V - len(given))
        table[token] = rest
        for nxt, p in given.items():
            table[token, nxt] = p
    return table


class BigramLM(LanguageModel):
    """A language model whose next token depends only on the last one (a [V, V] table)."""

    def __init__(self, probs: Tensor) -> None:
        super().__init__(LanguageModel.Config())
        self.log_table = nn.Parameter(probs.log())

    def init_state(self, batch_size: int, max_length: int) -> NestedMap:
        return NestedMap(last=torch.full((batch_size,), BOS_ID))

    def extend_step(self, state: NestedMap, ids: Tensor) -> tuple[Tensor, NestedMap, None]:
        return self.log_table[ids].log_softmax(-1), NestedMap(last=ids), None


# "c a r" is the word the language model prefers; the recognizer slightly prefers "c a t".
PREFERS_CAR = _table({BOS_ID: {C: 0.9}, C: {A: 0.9}, A: {R: 0.9, T: 0.01}})
SOUNDS_LIKE_CAT = _table({BOS_ID: {C: 0.9}, C: {A: 0.9}, A: {T: 0.5, R: 0.4}})


def _small_lm(kind: str, num_layers: int) -> LanguageModel:
    """A randomly initialised Transformer or LSTM language model over the V test labels."""
    torch.manual_seed(0)
    if kind == "transformer":
        return transformer_lm_config(
            vocab_size=V,
            num_layers=num_layers,
            model_dim=16,
            hidden_dim=32,
            num_heads=2,
            dropout_prob=0.0,
        ).build()
    config = lstm_lm_config(vocab_size=V, num_layers=num_layers, model_dim=16, dropout_prob=0.0)
    return config.build()


def _fusion(weight: float, length_bonus: float = 0.0, lm: LanguageModel | None = None) -> LMFusion:
    config = LMFusion.Config(weight=weight, length_bonus=length_bonus)
    return config.build(lm or BigramLM(PREFERS_CAR), torch.arange(V))


def _ctc_frames() -> Tensor:
    """[3, V] log-probs: "c", "a", then "t" (0.5) a little above "r" (0.45)."""
    probs = torch.full((3, V), 0.01 / (V - 2))
    probs[0, C] = probs[1, A] = 0.99
    probs[2, T], probs[2, R] = 0.5, 0.45
    probs[2, BLANK] = 0.05 - 0.01 * (V - 3) / (V - 2)
    return (probs / probs.sum(-1, keepdim=True)).log()


def test_fused_lm_turns_ctc_beam_search_towards_its_word() -> None:
    frames = _ctc_frames()
    assert ctc_prefix_beam_search(frames, beam_size=4)[0][0] == [C, A, T]
    fused = ctc_prefix_beam_search(frames, 4, lm=PrefixLMScorer(_fusion(1.0), 3))
    assert fused[0][0] == [C, A, R]
    paddings = torch.zeros(1, 3)
    assert ctc_beam_decode(frames[None], paddings, 4, fusion=_fusion(1.0)) == [[C, A, R]]


def test_ctc_fusion_with_weight_zero_is_the_unfused_search() -> None:
    frames = _ctc_frames()
    unfused = ctc_prefix_beam_search(frames, beam_size=4)
    assert ctc_prefix_beam_search(frames, 4, lm=PrefixLMScorer(_fusion(0.0), 3)) == unfused


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_batched_fused_ctc_decode_equals_each_utterance_alone_with_fewer_lm_steps(
    kind: str,
) -> None:
    """``ctc_beam_decode`` runs the utterances' searches in lockstep, one language model step
    for all their new prefixes of one length: the same labels as one search at a time."""
    lm = _small_lm(kind, num_layers=1)
    with torch.no_grad():  # a language model with opinions, so that fusion changes labels
        for parameter in lm.parameters():
            parameter.mul_(4.0)
    fusion = _fusion(1.0, length_bonus=1.0, lm=lm)
    lengths = [7, 3, 10, 0, 5]
    log_probs = torch.randn(len(lengths), 10, V).log_softmax(-1)
    paddings = (torch.arange(10)[None] >= torch.tensor(lengths)[:, None]).float()
    steps = []
    inner = fusion.extend_step

    def counting(state: NestedMap, labels: Tensor):
        steps.append(labels.shape[0])
        return inner(state, labels)

    fusion.extend_step = counting
    batched = ctc_beam_decode(log_probs, paddings, 3, fusion=fusion)
    batched_steps, steps[:] = len(steps), []
    alone = [
        ctc_prefix_beam_search(row[:n], 3, lm=PrefixLMScorer(fusion, n))[0][0]
        for row, n in zip(log_probs, lengths, strict=True)
    ]
    assert batched == alone
    assert batched != ctc_beam_decode(log_probs, paddings, 3)  # the language model counts
    assert batched_steps < len(steps)


def test_ctc_length_bonus_favours_emitting_labels() -> None:
    # Blank is likelier than "a" in every frame: the empty output wins without a bonus.
    probs = torch.full((2, V), 0.002)
    probs[:, BLANK], probs[:, A] = 0.8, 0.188
    frames = probs.log()
    assert ctc_prefix_beam_search(frames, 4, lm=PrefixLMScorer(_fusion(0.0), 2))[0][0] == []
    bonus = PrefixLMScorer(_fusion(0.0, length_bonus=3.0), 2)
    assert ctc_prefix_beam_search(frames, 4, lm=bonus)[0][0] == [A]


def _fused(decoder: object, fusion: LMFusion) -> FusedModel:
    return FusedModel(decoder, [fusion], length_bonus=fusion.length_bonus)


def _attention_search(model: object, batch_size: int = 1, max_step_gain: float = 0.0):
    search = BeamSearch.Config(beam_size=3, length_penalty_alpha=0.0).build()
    state = NestedMap(model=NestedMap(last=torch.full((batch_size,), BOS_ID)))
    if isinstance(model, FusedModel):
        scorer_states = [scorer.init_state(batch_size, 8) for scorer in model.scorers]
        state = model.initial_state(state.model, scorer_states)
    else:
        state = state.model
    return search.search(
        model,
        state,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        batch_size=batch_size,
        source_lengths=torch.full((batch_size,), 4),
        max_length=5,
        max_step_gain=max_step_gain,
    )


def test_fused_lm_turns_attention_beam_search_towards_its_word() -> None:
    decoder = BigramLM(SOUNDS_LIKE_CAT)
    assert _attention_search(decoder).best_ids == [[C, A, T]]
    fused = _attention_search(_fused(decoder, _fusion(1.0)), batch_size=2)
    assert fused.best_ids == [[C, A, R], [C, A, R]]


def test_attention_fusion_with_weight_zero_is_the_unfused_search() -> None:
    decoder = BigramLM(SOUNDS_LIKE_CAT)
    unfused = _attention_search(decoder)
    fused = _attention_search(_fused(decoder, _fusion(0.0)))
    assert fused.ids == unfused.ids
    torch.testing.assert_close(fused.scores, unfused.scores, rtol=0, atol=0)


def test_attention_length_bonus_lengthens_and_early_stopping_allows_for_it() -> None:
    # EOS right after BOS is likeliest; a bonus per token makes "c a t" win instead.
    decoder = BigramLM(_table({BOS_ID: {EOS_ID: 0.5, C: 0.4}, C: {A: 0.9}, A: {T: 0.9}}))
    assert _attention_search(decoder).best_ids == [[]]
    fused = _fused(decoder, _fusion(0.0, length_bonus=2.0))
    assert _attention_search(fused, max_step_gain=2.0).best_ids == [[C, A, T]]
    # Without the gain, early stopping ends the search once "" is found.
    assert _attention_search(fused).best_ids == [[]]


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_prefix_scores_equal_the_lm_fed_each_prefix(kind: str) -> None:
    lm = _small_lm(kind, num_layers=2)
    scorer = PrefixLMScorer(_fusion(0.5, lm=lm), max_length=4)
    calls = [[()], [(), (C,)], [(C,), (C, A), (T,)], [(C, A, R), (T,)]]
    for prefixes in calls:
        scores = scorer.next_scores(prefixes)
        for prefix in prefixes:
            state = lm.eval().init_state(1, 5)
            for token in (BOS_ID, *prefix):
                log_probs, state, _ = lm.extend_step(state, torch.tensor([token]))
            torch.testing.assert_close(torch.tensor(scores[prefix]), 0.5 * log_probs[0])
    assert scorer.end_score((T,)) == pytest.approx(scores[(T,)][EOS_ID])


def _char_tokenizer(texts: list[str], cache: Path) -> SentencePieceTokenizer:
    config = SentencePieceTokenizer.Config(model_type="char", vocab_size=12)
    return train_or_load_sentencepiece(config, texts, cache)[0]


def test_label_map_matches_pieces_and_refuses_other_pieces(tmp_path: Path) -> None:
    labels = _char_tokenizer(["a cab", "bad cab dab"] * 20, tmp_path)
    lm = _char_tokenizer(["dab bad", "cab a cab"] * 20, tmp_path)
    mapping = label_map(labels, lm, num_labels=labels.vocab_size + 2)
    for label in range(labels.vocab_size):
        piece = labels.processor.id_to_piece(label)
        assert lm.processor.id_to_piece(int(mapping[label])) == piece
    assert mapping[-2:].tolist() == [lm.processor.unk_id()] * 2
    other = _char_tokenizer(["a cab", "bad cab fab"] * 20, tmp_path)
    with pytest.raises(ConfigError, match="data.tokenizer.model_path"):
        label_map(labels, other, labels.vocab_size)
