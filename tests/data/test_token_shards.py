"""Token shards: a round trip of every pair, cache hits and invalidation, malformed lines."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from seqlab.core.file_hash import sha256_of
from seqlab.data.shard_cache import MANIFEST_FILE, file_fingerprint
from seqlab.data.text_pairs import DataFormatError, read_text_pairs
from seqlab.data.token_shards import LINES, iter_pairs, open_pair_shards, open_token_shards

WORDS = "in the beginning god created heaven and earth light darkness day night".split()


def write_corpus(path: Path, count: int, seed: int = 0, blank_every: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        src = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 12))))
        tgt = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 12)))).upper()
        lines.append(f"{src}\t{tgt}\n")
        if blank_every and i % blank_every == 0:
            lines.append("\n")
    path.write_text("".join(lines))


def train_tokenizer(path: Path, corpus: Path, vocab_size: int = 48) -> Path:
    pairs = read_text_pairs(corpus)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([s for s, _ in pairs] + [t for _, t in pairs]),
        model_writer=model,
        vocab_size=vocab_size,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    train = tmp_path / "train.tsv"
    write_corpus(train, 3000, blank_every=500)
    return train, train_tokenizer(tmp_path / "spm.model", train)


def test_shards_hold_every_pair_as_the_tokenizer_encodes_it(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    train, model = corpus
    shards = open_pair_shards(train, model, tmp_path / "cache", workers=2)
    pairs = read_text_pairs(train)
    processor = spm.SentencePieceProcessor(model_file=str(model))
    assert len(shards) == len(pairs) == 3000
    assert shards.manifest["blank_lines"] == 6
    assert shards.manifest["encoding"] == "leb128"
    # 48 pieces: every id below 128 takes one byte.
    assert (shards.directory / "src.bin").stat().st_size == int(shards.lengths["src"].sum())
    for i in (0, 1, 1234, 2999):
        assert shards.ids("src", i).tolist() == processor.encode(pairs[i][0])
        assert shards.ids("tgt", i).tolist() == processor.encode(pairs[i][1])
    expected = [len(processor.encode(s)) for s, _ in pairs]
    assert shards.lengths["src"].tolist() == expected


def test_an_unchanged_file_finds_its_shards_without_reading_the_text(
    corpus: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, model = corpus
    first = open_pair_shards(train, model, tmp_path / "cache", workers=1)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt")

    def hash_all_but_the_corpus(path: Path) -> str:
        assert Path(path).resolve() != train.resolve(), "the corpus was read again"
        return sha256_of(path)

    monkeypatch.setattr("seqlab.data.token_shards.build_token_shards", no_build)
    monkeypatch.setattr("seqlab.data.shard_cache.sha256_of", hash_all_but_the_corpus)
    again = open_pair_shards(train, model, tmp_path / "cache")
    assert again.directory == first.directory


def test_a_changed_file_or_tokenizer_makes_a_new_shard_set(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    train, model = corpus
    cache = tmp_path / "cache"
    first = open_pair_shards(train, model, cache, workers=1)
    with train.open("a") as f:
        f.write("light\tLIGHT\n")
    changed = open_pair_shards(train, model, cache, workers=1)
    assert changed.directory != first.directory and len(changed) == len(first) + 1
    assert (
        changed.manifest["source"]["sha256"] == file_fingerprint(train, cache / "shards")["sha256"]
    )
    other_model = train_tokenizer(tmp_path / "other.model", train, vocab_size=44)
    retokenized = open_pair_shards(train, other_model, cache, workers=1)
    assert retokenized.directory not in (first.directory, changed.directory)


def test_the_content_hash_is_kept_per_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "a.tsv"
    path.write_text("a\tb\n")
    first = file_fingerprint(path, tmp_path)
    stored = json.loads((tmp_path / "fingerprints.json").read_text())
    stored[str(path.resolve())]["sha256"] = "remembered"
    (tmp_path / "fingerprints.json").write_text(json.dumps(stored))
    assert file_fingerprint(path, tmp_path)["sha256"] == "remembered"  # not read again
    path.write_text("a\tc\n")
    os.utime(path, ns=(first["mtime_ns"] + 10**9, first["mtime_ns"] + 10**9))
    assert file_fingerprint(path, tmp_path)["sha256"] not in ("remembered", first["sha256"])


def test_a_malformed_line_deep_in_a_large_file_is_named_and_leaves_nothing(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    train, model = corpus
    big = tmp_path / "big.tsv"
    write_corpus(big, 60_000, seed=3)
    with big.open("a") as f:
        f.write("no tab on this line\n")
    cache = tmp_path / "cache"
    with pytest.raises(DataFormatError, match=rf"^{big}:60001: expected 2 tab-separated"):
        open_pair_shards(big, model, cache, workers=2)
    leftovers = [p for p in (cache / "shards").iterdir() if p.name != "fingerprints.json"]
    assert leftovers == []


def test_manifest_records_the_source_and_tokenizer(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    train, model = corpus
    shards = open_pair_shards(train, model, tmp_path / "cache", workers=1)
    manifest = json.loads((shards.directory / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 2
    assert manifest["source"]["path"] == str(train.resolve())
    assert manifest["source"]["size"] == train.stat().st_size
    assert len(manifest["tokenizer_sha256"]) == 64


def write_parquet(path: Path, pairs: list[tuple[object, object]], row_group_size: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"src": [s for s, _ in pairs], "tgt": [t for _, t in pairs], "n": [1] * len(pairs)}
    )
    pq.write_table(table, path, row_group_size=row_group_size)


def test_parquet_pairs_shard_like_the_same_tsv(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train, model = corpus
    pairs = read_text_pairs(train)
    parquet = tmp_path / "train.parquet"
    write_parquet(parquet, pairs, row_group_size=700)
    assert read_text_pairs(parquet) == pairs
    from_tsv = open_pair_shards(train, model, tmp_path / "cache", workers=1)
    from_parquet = open_pair_shards(parquet, model, tmp_path / "cache", workers=2)
    assert len(from_parquet) == len(from_tsv) == 3000
    for side in ("src", "tgt"):
        assert from_parquet.lengths[side].tolist() == from_tsv.lengths[side].tolist()
        for i in (0, 699, 700, 2999):
            assert from_parquet.ids(side, i).tolist() == from_tsv.ids(side, i).tolist()


def test_a_bad_parquet_row_or_schema_is_named(tmp_path: Path) -> None:
    bad_row = tmp_path / "bad.parquet"
    write_parquet(bad_row, [("a b", "c d")] * 30 + [("e f", "  ")], row_group_size=8)
    with pytest.raises(DataFormatError, match=rf"^{bad_row}: row 31: empty target text$"):
        read_text_pairs(bad_row)
    missing = tmp_path / "null.parquet"
    write_parquet(missing, [("a", "b"), (None, "c")], row_group_size=8)
    with pytest.raises(DataFormatError, match=r"row 2: column 'src' is not a string"):
        list(iter_pairs(missing))
    import pyarrow as pa
    import pyarrow.parquet as pq

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"source": ["a"], "target": ["b"]}), other)
    with pytest.raises(DataFormatError, match=r"needs string columns 'src' and 'tgt'; it has"):
        read_text_pairs(other)


def test_pair_shards_keep_their_key_and_lines_of_the_same_file_get_their_own(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    """Pair shard sets built before there were record kinds are found again; the lines of
    the same file with the same tokenizer are a set of their own."""
    train, model = corpus
    pairs = open_pair_shards(train, model, tmp_path / "cache", workers=1)
    material = f"2\n{sha256_of(train)}\n{sha256_of(model)}"
    assert pairs.directory.name == f"train-{hashlib.sha256(material.encode()).hexdigest()[:16]}"
    assert sorted(p.name for p in pairs.directory.iterdir()) == [
        "manifest.json", "src.bin", "src_lengths.npy", "src_sizes.npy",
        "tgt.bin", "tgt_lengths.npy", "tgt_sizes.npy",
    ]  # fmt: skip
    lines = open_token_shards(train, LINES, model, tmp_path / "cache", workers=1)
    assert lines.directory != pairs.directory
    assert len(lines) == len(pairs) and lines.manifest["num_lines"] == len(pairs)
    assert lines.counts["words"][0] == len(" ".join(next(iter_pairs(train))).split())
