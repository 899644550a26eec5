"""Tests for seqlab.data.sentencepiece_tokenizer."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from seqlab.data import sentencepiece_tokenizer as sp_module
from seqlab.data.sentencepiece_tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    SentencePieceTokenizer,
    copy_model,
    train_or_load_sentencepiece,
)

VOCAB_SIZE = 60


@pytest.fixture(scope="module")
def texts(sentence_pairs) -> list[str]:
    pairs = sentence_pairs(300, 0)
    return [s for s, _ in pairs] + [t for _, t in pairs]


@pytest.fixture(scope="module")
def trained(
    texts: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[SentencePieceTokenizer, Path]:
    config = SentencePieceTokenizer.Config(vocab_size=VOCAB_SIZE)
    return train_or_load_sentencepiece(config, texts, tmp_path_factory.mktemp("spm"))


def test_special_ids(trained: tuple[SentencePieceTokenizer, Path]) -> None:
    tokenizer, _ = trained
    p = tokenizer.processor
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert (p.pad_id(), p.unk_id(), p.bos_id(), p.eos_id()) == (0, 1, 2, 3)
    assert [p.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert tokenizer.vocab_size == VOCAB_SIZE


def test_encode_decode_round_trip(
    trained: tuple[SentencePieceTokenizer, Path], texts: list[str]
) -> None:
    tokenizer, _ = trained
    unseen = "My brother hears the old city in the morning."
    for text in [*texts[:20], *texts[-20:], unseen]:
        ids = tokenizer.encode(text)
        assert ids and min(ids) > EOS_ID and max(ids) < VOCAB_SIZE
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode_batch(texts[:3]) == [tokenizer.encode(t) for t in texts[:3]]


def test_unknown_characters_map_to_unk(trained: tuple[SentencePieceTokenizer, Path]) -> None:
    tokenizer, _ = trained
    assert UNK_ID in tokenizer.encode("the \u03a9 king")


def test_decode_stops_at_eos_and_drops_specials(
    trained: tuple[SentencePieceTokenizer, Path],
) -> None:
    tokenizer, _ = trained
    ids = tokenizer.encode("The king sees the bread.")
    other = tokenizer.encode("A child loves the water.")
    assert tokenizer.decode([BOS_ID, *ids, EOS_ID, *other]) == "The king sees the bread."
    assert tokenizer.decode([*ids, EOS_ID, PAD_ID, PAD_ID]) == "The king sees the bread."
    assert tokenizer.decode(torch.tensor([*ids, EOS_ID, *other])) == "The king sees the bread."
    assert tokenizer.decode([EOS_ID, *ids]) == ""


def test_cached_model_is_reused(
    trained: tuple[SentencePieceTokenizer, Path],
    texts: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokenizer, path = trained
    assert path.name.startswith(f"spm-unigram-{VOCAB_SIZE}-") and path.suffix == ".model"
    mtime = path.stat().st_mtime_ns

    def no_training(**kwargs: object) -> None:
        raise AssertionError("retrained although a cached model exists")

    monkeypatch.setattr(sp_module.spm.SentencePieceTrainer, "train", no_training)
    config = SentencePieceTokenizer.Config(vocab_size=VOCAB_SIZE)
    again, again_path = train_or_load_sentencepiece(config, texts, path.parent)
    assert again_path == path
    assert path.stat().st_mtime_ns == mtime
    assert again.encode(texts[0]) == tokenizer.encode(texts[0])
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files


def test_other_text_or_settings_get_another_model(
    trained: tuple[SentencePieceTokenizer, Path], texts: list[str]
) -> None:
    _, path = trained
    cache = path.parent
    _, fewer_texts = train_or_load_sentencepiece(
        SentencePieceTokenizer.Config(vocab_size=VOCAB_SIZE), texts[:-1], cache
    )
    _, bpe = train_or_load_sentencepiece(
        SentencePieceTokenizer.Config(vocab_size=VOCAB_SIZE, model_type="bpe"), texts, cache
    )
    assert len({path, fewer_texts, bpe}) == 3
    assert bpe.name.startswith("spm-bpe-")


def test_explicit_model_path_is_loaded(
    trained: tuple[SentencePieceTokenizer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer, path = trained
    monkeypatch.setattr(sp_module.spm.SentencePieceTrainer, "train", None)  # must not train
    config = SentencePieceTokenizer.Config(vocab_size=1, model_path=str(path))
    loaded, loaded_path = train_or_load_sentencepiece(config, [], Path("/nonexistent"))
    assert loaded_path == path
    assert loaded.vocab_size == tokenizer.vocab_size


def test_model_with_other_special_ids_is_refused(texts: list[str]) -> None:
    stream = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=stream, vocab_size=VOCAB_SIZE, minloglevel=2
    )
    processor = spm.SentencePieceProcessor(model_proto=stream.getvalue())
    with pytest.raises(ValueError, match="pad=0, unk=1, bos=2, eos=3"):
        SentencePieceTokenizer(SentencePieceTokenizer.Config(), processor)


def test_copy_model(trained: tuple[SentencePieceTokenizer, Path], tmp_path: Path) -> None:
    _, path = trained
    dest = tmp_path / "tokenizer.model"
    copy_model(path, dest)
    assert dest.read_bytes() == path.read_bytes()
    mtime = dest.stat().st_mtime_ns
    copy_model(path, dest)  # unchanged content: not rewritten
    assert dest.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.model"]


def test_user_defined_symbols_are_whole_pieces_from_id_4(
    trained: tuple[SentencePieceTokenizer, Path], texts: list[str]
) -> None:
    _, path = trained
    config = SentencePieceTokenizer.Config(vocab_size=VOCAB_SIZE, user_defined_symbols=("<2es>",))
    tokenizer, tagged = train_or_load_sentencepiece(config, texts, path.parent)
    assert tagged != path  # another model; models without symbols keep their cache keys
    assert tokenizer.processor.id_to_piece(4) == "<2es>"
    assert 4 in tokenizer.encode("<2es> the man")
