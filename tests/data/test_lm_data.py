"""Language-model input from text files: shards of the training text, tokenizing, cutting,
packing, batching; plain text, JSONL and Parquet."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.data.lm_data import PROMPTS, LMData
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID, SentencePieceTokenizer
from seqlab.data.sequence_packing import pack_sequences
from seqlab.data.text_lines import read_text_lines
from seqlab.data.text_pairs import DataFormatError

_WORDS = "the king and people of israel went up to city house bread water light word".split()


def _write_lines(path: Path, count: int, seed: int, max_words: int = 12) -> Path:
    """Writes ``count`` random lines to ``path``, unless it is there already."""
    if path.exists():
        return path
    rng = random.Random(seed)
    lines = [" ".join(rng.choices(_WORDS, k=rng.randint(1, max_words))) + "." for _ in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tmp_path: Path, **changes: object) -> LMData.Config:
    config = LMData.Config(
        corpus="",
        cache_dir=str(tmp_path / "cache"),
        train_path=str(_write_lines(tmp_path / "train.txt", 300, seed=0, max_words=30)),
        dev_path=str(_write_lines(tmp_path / "dev.txt", 20, seed=1)),
        test_path=str(_write_lines(tmp_path / "test.txt", 20, seed=2)),
        tokenizer=SentencePieceTokenizer.Config(vocab_size=40),
        row_length=24,
        max_tokens=96,
        prompt_words=2,
        num_workers=2,
    )
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def _data(config: LMData.Config) -> LMData:
    lm_data = config.build()
    lm_data.load_tokenizer()
    return lm_data


@pytest.fixture
def data(tmp_path: Path) -> LMData:
    return _data(_config(tmp_path))


def test_training_lines_from_shards_are_those_of_in_memory_tokenization(data: LMData) -> None:
    """Every line is cut into sequences of at most row_length targets (BOS + tokens ->
    tokens + EOS, joined), packed into rows, read back from the shards as the tokenizer
    encodes the text; the words of each line are counted once, at its first sequence."""
    examples = data.examples("train")
    lines = read_text_lines(data.config.train_path)
    encoded = data.tokenizer.encode_batch(lines)
    expected: list[tuple[list[int], list[int], int]] = []
    for line, ids in zip(lines, encoded, strict=True):
        full = [BOS_ID, *ids, EOS_ID]
        for start in range(0, len(full) - 1, 24):
            end = min(start + 24, len(full) - 1)
            words = len(line.split()) + 1 if start == 0 else 0
            expected.append((full[start:end], full[start + 1 : end + 1], words))
    assert len(expected) > 300  # long lines were cut into several sequences
    rows = pack_sequences([len(inputs) for inputs, _, _ in expected], 24)
    assert len(examples) == len(rows) < len(expected)  # several sequences share a row
    assert [examples.rows[r] for r in range(len(rows))] == rows
    got = [(*examples.sequence_ids(s), examples.sequence_words(s)) for s in range(len(expected))]
    assert got == expected
    assert examples.lengths().tolist() == [sum(len(expected[s][0]) for s in r) for r in rows]
    assert max(examples.lengths()) <= 24
    assert [examples.shards.ids("text", i).tolist() for i in range(len(lines))] == encoded
    assert examples.shards.counts["words"].tolist() == [len(t.split()) for t in lines]
    assert len(examples.texts) == len(lines) and examples.texts[0] == ""  # no text kept


def test_train_limit_takes_the_first_lines(tmp_path: Path) -> None:
    data = _data(_config(tmp_path, train_limit=50))
    examples = data.examples("train")
    assert len(examples.texts) == 50 and int(examples.line_of[-1]) == 49
    words = sum(examples.sequence_words(s) for s in range(len(examples.line_of)))
    assert words == sum(len(t.split()) + 1 for t in read_text_lines(data.config.train_path)[:50])


def test_the_training_split_holds_no_prompts_or_references(data: LMData) -> None:
    train = data.examples("train")
    assert train.prompt_texts == [] and train.reference_texts == []
    batch = data.collate(train, [0, 1])
    assert batch.prompt_texts == ["", ""] and batch.reference_texts == ["", ""]
    dev = data.examples("dev")
    assert len(dev.prompt_texts) == len(dev.reference_texts) == len(dev.texts) > 0


def test_collate_lays_out_segments_with_restarting_positions(data: LMData) -> None:
    examples = data.examples("train")
    row = next(r for r, segments in enumerate(examples.rows) if len(segments) >= 2)
    batch = data.collate(examples, [row])
    (first_ids, _), (second_ids, _) = (examples.sequence_ids(s) for s in examples.rows[row][:2])
    first, second = len(first_ids), len(second_ids)
    assert batch.segment_ids[0, :first].tolist() == [1] * first
    assert batch.segment_ids[0, first : first + second].tolist() == [2] * second
    assert batch.segment_positions[0, first : first + second].tolist() == list(range(second))
    assert batch.ids[0, first] == second_ids[0]
    assert torch.equal(batch.paddings, (batch.segment_ids == 0).float())
    assert batch.num_tokens == float((batch.segment_ids > 0).sum())


def test_training_stream_is_deterministic_and_resumes(data: LMData) -> None:
    examples = data.examples("train")
    stream = data.train_stream(examples, seed=3)
    first = [next(stream) for _ in range(7)]
    assert first == [next(s) for s in [data.train_stream(examples, seed=3)] for _ in range(7)]
    state = stream.state_dict()
    expected = [next(stream) for _ in range(30)]
    resumed = data.train_stream(examples, seed=3)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(30)] == expected
    for indices in expected:
        batch = data.collate(examples, indices)
        assert batch.ids.numel() <= 96


def test_dev_lines_are_rows_of_their_own_with_prompts(data: LMData, tmp_path: Path) -> None:
    examples = data.examples("dev")
    assert examples.rows == [[i] for i in range(20)]
    batch = data.collate(examples, [0, 1])
    for i in (0, 1):
        words = examples.texts[i].split()
        assert batch.prompt_texts[i] == " ".join(words[:2])
        assert batch.reference_texts[i] == " ".join(words[2:])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the king went\nand the people\n")
    data.config.prompt_path = str(prompts)
    data._paths = None
    assert data.examples(PROMPTS).prompt_texts == ["the king went", "and the people"]


def test_bad_input_is_named(tmp_path: Path, data: LMData) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xfe\n")
    data.config.dev_path = str(bad)
    data._paths = None
    with pytest.raises(DataFormatError, match=r"bad\.txt:2"):
        data.examples("dev")
    with pytest.raises(ConfigError, match="row_length"):
        LMData.Config(row_length=512, max_tokens=256).build()


def test_an_unchanged_file_reuses_its_shards_and_a_changed_one_makes_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _data(_config(tmp_path)).examples("train")
    with monkeypatch.context() as patch:

        def no_build(*args: object, **kwargs: object) -> None:
            raise AssertionError("rebuilt")

        patch.setattr("seqlab.data.token_shards.build_token_shards", no_build)
        again = _data(_config(tmp_path)).examples("train")
        assert again.shards.directory == first.shards.directory
    train = Path(first.shards.manifest["source"]["path"])
    with train.open("a") as f:
        f.write("the light of the city.\n")
    changed_data = _data(_config(tmp_path))
    changed = changed_data.examples("train")
    assert changed.shards.directory != first.shards.directory
    assert len(changed.texts) == len(first.texts) + 1
    assert changed_data.tokenizer_path is not None  # trained again, on the changed file
    assert changed.identity()["sources"][0]["sha256"] != first.identity()["sources"][0]["sha256"]


def _write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


def _write_parquet(path: Path, texts: list[object]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts, "n": list(range(len(texts)))}), path, row_group_size=64)
    return path


def test_jsonl_and_parquet_text_reads_as_the_same_plain_text(data: LMData, tmp_path: Path) -> None:
    """The same lines as JSONL (a blank text among them) and Parquet (an empty row) make the
    same shards with the same tokenizer, and the same dev examples."""
    lines = read_text_lines(data.config.train_path)
    from_text = data.examples("train")
    model = str(data.tokenizer_path)
    other_formats = {
        "jsonl": _write_jsonl(tmp_path / "train.jsonl", lines[:10] + ["  "] + lines[10:]),
        "parquet": _write_parquet(tmp_path / "train.parquet", lines[:100] + [""] + lines[100:]),
    }
    for path in other_formats.values():
        config = _config(tmp_path, train_path=str(path), dev_path=str(path))
        config.tokenizer.model_path = model
        other = _data(config)
        examples = other.examples("train")
        assert examples.shards.directory != from_text.shards.directory
        assert examples.num_skipped == 1
        assert examples.shards.lengths["text"].tolist() == from_text.shards.lengths["text"].tolist()
        for i in (0, 10, 100, len(lines) - 1):
            assert (
                examples.shards.ids("text", i).tolist() == from_text.shards.ids("text", i).tolist()
            )
        assert [examples.rows[r] for r in range(len(examples))] == [
            from_text.rows[r] for r in range(len(from_text))
        ]
        assert other.examples("dev").texts == lines


def test_a_malformed_training_line_is_named_by_file_and_line(data: LMData, tmp_path: Path) -> None:
    lines = read_text_lines(data.config.train_path)
    bad = _write_jsonl(tmp_path / "bad.jsonl", lines[:2])
    with bad.open("a") as f:
        f.write('{"txt": "no text field"}\n')
    config = _config(tmp_path, train_path=str(bad))
    with pytest.raises(DataFormatError, match=rf"^{bad}:3: field 'text' missing or not a string$"):
        _data(config)  # the tokenizer's sample reads it first
    config.tokenizer.model_path = str(data.tokenizer_path)
    with pytest.raises(DataFormatError, match=rf"^{bad}:3: field 'text' missing"):
        _data(config).examples("train")  # the shard builder, in a worker
    leftovers = [p.name for p in (tmp_path / "cache" / "shards").iterdir()]
    assert not any(name.startswith((".bad", "bad")) for name in leftovers)
    null_row = _write_parquet(tmp_path / "null.parquet", ["a b", None])
    with pytest.raises(DataFormatError, match=rf"^{null_row}: row 2: column 'text' is not a"):
        read_text_lines(null_row)
    other = tmp_path / "other.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sentence": ["a"]}), other)
    with pytest.raises(DataFormatError, match=r"needs string column 'text'; it has"):
        read_text_lines(other)
