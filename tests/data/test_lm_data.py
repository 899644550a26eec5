"""Language-model input from plain-text files: tokenizing, cutting, packing, batching."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.data.lm_data import PROMPTS, LMData
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID, SentencePieceTokenizer
from seqlab.data.text_pairs import DataFormatError

_WORDS = "the king and people of israel went up to city house bread water light word".split()


def _write_lines(path: Path, count: int, seed: int, max_words: int = 12) -> Path:
    rng = random.Random(seed)
    lines = [" ".join(rng.choices(_WORDS, k=rng.randint(1, max_words))) + "." for _ in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def data(tmp_path: Path) -> LMData:
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
    )
    lm_data = config.build()
    lm_data.load_tokenizer()
    return lm_data


def test_training_rows_are_packed_and_cut_to_the_row_length(data: LMData) -> None:
    examples = data.examples("train")
    assert max(examples.lengths()) <= 24
    assert len(examples.input_ids) > 300  # long lines were cut into several chunks
    assert len(examples) < len(examples.input_ids)  # and several chunks share a row
    # Every line's chunks, joined, are BOS + tokens -> tokens + EOS.
    lines = data.tokenizer.encode_batch(examples.texts)
    for line in (0, 1, 2):
        chunks = [s for s, of in enumerate(examples.line_of) if of == line]
        inputs = [t for s in chunks for t in examples.input_ids[s]]
        targets = [t for s in chunks for t in examples.target_ids[s]]
        assert inputs == [BOS_ID, *lines[line]]
        assert targets == [*lines[line], EOS_ID]
    # Words plus one EOS per line, counted once per line.
    assert sum(examples.num_words) == sum(len(t.split()) + 1 for t in examples.texts)


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
    first, second = (len(examples.input_ids[s]) for s in examples.rows[row][:2])
    assert batch.segment_ids[0, :first].tolist() == [1] * first
    assert batch.segment_ids[0, first : first + second].tolist() == [2] * second
    assert batch.segment_positions[0, first : first + second].tolist() == list(range(second))
    assert batch.ids[0, first] == examples.input_ids[examples.rows[row][1]][0]
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
