"""Tests for seqlab.data.mt_data."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch

from seqlab.data.mt_data import MissingCorpusError, MTData, MTExamples, collate
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID, PAD_ID, SentencePieceTokenizer
from seqlab.data.text_pairs import read_text_pairs


def _examples() -> MTExamples:
    return MTExamples(
        source_ids=[[5, 6, EOS_ID], [7, EOS_ID], [8, 9, 10, 11, EOS_ID]],
        target_ids=[[12, 13, 14], [15], [16, 17]],
        source_text=["s0", "s1", "s2"],
        target_text=["t0", "t1", "t2"],
    )


def test_lengths_count_bos_or_eos() -> None:
    assert _examples().lengths() == [4, 2, 5]
    assert len(_examples()) == 3


def test_collate_pads_and_places_bos_eos() -> None:
    batch = collate(_examples(), [1, 0])
    assert batch.src_ids.tolist() == [[7, EOS_ID, PAD_ID], [5, 6, EOS_ID]]
    assert batch.src_paddings.tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert batch.tgt_in_ids.tolist() == [[BOS_ID, 15, PAD_ID, PAD_ID], [BOS_ID, 12, 13, 14]]
    assert batch.tgt_out_ids.tolist() == [[15, EOS_ID, PAD_ID, PAD_ID], [12, 13, 14, EOS_ID]]
    assert batch.tgt_paddings.tolist() == [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    assert batch.src_ids.dtype == batch.tgt_in_ids.dtype == batch.tgt_out_ids.dtype == torch.long
    assert batch.src_paddings.dtype == batch.tgt_paddings.dtype == torch.float32
    assert batch.src_text == ["s1", "s0"]
    assert batch.tgt_text == ["t1", "t0"]
    assert batch.indices == [1, 0]
    assert MTData.collate is collate


def test_collate_single_example_has_no_padding() -> None:
    batch = collate(_examples(), [2])
    assert batch.src_ids.shape == (1, 5)
    assert batch.tgt_in_ids.shape == batch.tgt_out_ids.shape == (1, 3)
    assert batch.src_paddings.sum() == 0 and batch.tgt_paddings.sum() == 0


def _write_tsv(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def own_files(tmp_path_factory: pytest.TempPathFactory, sentence_pairs) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mt_data")
    test_path = root / "test.jsonl"
    test_pairs = sentence_pairs(10, 3)
    test_path.write_text("".join(json.dumps({"src": s, "tgt": t}) + "\n" for s, t in test_pairs))
    return {
        "train": _write_tsv(root / "train.tsv", sentence_pairs(200, 1)),
        "dev": _write_tsv(root / "dev.tsv", sentence_pairs(20, 2)),
        "test": test_path,
        "cache": root / "cache",
    }


def _config(files: dict[str, Path], **overrides: object) -> MTData.Config:
    config = MTData.Config(
        corpus="",
        cache_dir=str(files["cache"]),
        train_path=str(files["train"]),
        dev_path=str(files["dev"]),
        test_path=str(files["test"]),
        tokenizer=SentencePieceTokenizer.Config(vocab_size=60),
        max_tokens=64,
        eval_max_tokens=128,
    )
    return dataclasses.replace(config, **overrides)


def test_own_files_end_to_end(own_files: dict[str, Path]) -> None:
    data = _config(own_files).build()
    assert isinstance(data, MTData)
    assert data.paths() == {k: own_files[k] for k in ("train", "dev", "test")}
    tokenizer = data.load_tokenizer()
    assert data.tokenizer_path is not None
    assert data.tokenizer_path.parent == own_files["cache"] / "tokenizers"

    train = data.examples("train")
    assert len(train) == 200
    assert all(ids[-1] == EOS_ID for ids in train.source_ids)
    # Training pairs come from the memory-mapped shards, without their raw text.
    file_pairs = read_text_pairs(own_files["train"])
    assert tokenizer.decode(train.source_ids[0]) == file_pairs[0][0]
    assert train.source_text[0] == ""

    stream = data.train_stream(train, seed=0)
    seen: list[int] = []
    for indices in itertools.islice(stream, 10):
        batch = collate(train, indices)
        b, s = batch.src_ids.shape
        t = batch.tgt_in_ids.shape[1]
        assert b * max(s, t) <= 64 or b == 1
        assert batch.tgt_paddings.shape == batch.tgt_out_ids.shape == (b, t)
        for row in range(b):
            source, target = file_pairs[batch.indices[row]]
            assert tokenizer.decode(batch.tgt_out_ids[row]) == target
            assert tokenizer.decode(batch.src_ids[row]) == source
            assert batch.tgt_in_ids[row, 0] == BOS_ID
            real = int((1 - batch.tgt_paddings[row]).sum())
            assert batch.tgt_out_ids[row, real - 1] == EOS_ID
        seen.extend(indices)
    assert len(set(seen)) == len(seen)  # within the first epoch

    for split, count in (("dev", 20), ("test", 10)):
        examples = data.examples(split)
        assert len(examples) == count
        batches = data.eval_batches(examples)
        assert sorted(i for batch in batches for i in batch) == list(range(count))


def test_limits_and_max_length(own_files: dict[str, Path]) -> None:
    data = _config(own_files, train_limit=50, eval_limit=5).build()
    tokenizer = data.load_tokenizer()
    pairs = data._read("train")
    assert len(pairs) == 50
    sizes = [max(len(tokenizer.encode(s)), len(tokenizer.encode(t))) for s, t in pairs]
    limit = sorted(sizes)[len(sizes) // 2]
    data.config.max_length = limit
    train = data.examples("train")
    # Pairs with a side of max_length tokens or more are dropped, the others kept in order.
    kept = [tokenizer.decode(ids) for ids in train.source_ids]
    assert kept == [s for (s, _), n in zip(pairs, sizes, strict=True) if n < limit]
    assert 0 < len(train) < 50
    for source, target in zip(train.source_ids, train.target_ids, strict=True):
        assert len(source) <= limit and len(target) < limit
    assert len(data.examples("dev")) == 5  # max_length applies to training pairs only
    assert len(data.examples("test")) == 5
    # The tokenizer is trained on the limited training text, so it is another model.
    full = _config(own_files).build()
    full.load_tokenizer()
    assert data.tokenizer_path != full.tokenizer_path


def test_load_tokenizer_from_existing_model(own_files: dict[str, Path]) -> None:
    first = _config(own_files).build()
    first.load_tokenizer()
    assert first.tokenizer_path is not None
    second = _config(own_files).build()
    second.load_tokenizer(first.tokenizer_path)
    assert second.tokenizer_path == first.tokenizer_path


def test_examples_need_the_tokenizer(own_files: dict[str, Path]) -> None:
    with pytest.raises(RuntimeError, match="load_tokenizer"):
        _config(own_files).build().examples("train")


def test_missing_split_without_corpus_is_a_clear_error(own_files: dict[str, Path]) -> None:
    data = _config(own_files, dev_path="", test_path="").build()
    with pytest.raises(MissingCorpusError) as info:
        data.paths()
    message = str(info.value)
    assert "no corpus set and no path for ['dev', 'test']" in message
    assert "data.corpus" in message and "data.dev_path" in message and "data.test_path" in message
    assert "data.train_path" not in message


def test_reverse_swaps_sides_and_keeps_the_tokenizer(own_files: dict[str, Path]) -> None:
    forward = _config(own_files).build()
    forward.load_tokenizer()
    backward = _config(own_files, reverse=True).build()
    backward.load_tokenizer()
    # The tokenizer trains on the files as stored, so both directions share one model.
    assert backward.tokenizer_path == forward.tokenizer_path
    for split in ("train", "dev", "test"):
        a, b = forward.examples(split), backward.examples(split)
        assert list(b.source_text) == list(a.target_text)
        assert list(b.target_text) == list(a.source_text)
        assert [s[:-1] for s in b.source_ids] == list(a.target_ids)
        assert list(b.target_ids) == [s[:-1] for s in a.source_ids]
