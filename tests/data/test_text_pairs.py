"""Tests for seqlab.data.text_pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqlab.data.text_pairs import DataFormatError, read_text_pairs


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_reads_tsv(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "pairs.tsv",
        "Hello.\tHola.\n\n  In the beginning \tEn el principio\r\n\u00bfQu\u00e9?\tWhat?".encode(),
    )
    assert read_text_pairs(path) == [
        ("Hello.", "Hola."),
        ("In the beginning", "En el principio"),
        ("\u00bfQu\u00e9?", "What?"),
    ]
    assert read_text_pairs(str(path)) == read_text_pairs(path)


def test_reads_jsonl(tmp_path: Path) -> None:
    lines = [
        json.dumps({"src": "Hello.", "tgt": "Hola.", "id": 1}),
        "",
        json.dumps({"src": "tab\tinside", "tgt": "se\u00f1or"}, ensure_ascii=False),
    ]
    path = _write(tmp_path / "pairs.jsonl", "\n".join(lines).encode())
    assert read_text_pairs(path) == [("Hello.", "Hola."), ("tab\tinside", "se\u00f1or")]


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_byte_order_mark_is_dropped(tmp_path: Path, suffix: str) -> None:
    line = "a\tb" if suffix == ".tsv" else json.dumps({"src": "a", "tgt": "b"})
    path = _write(tmp_path / f"bom{suffix}", b"\xef\xbb\xbf" + line.encode() + b"\n")
    assert read_text_pairs(path) == [("a", "b")]


def test_empty_file_gives_no_pairs(tmp_path: Path) -> None:
    assert read_text_pairs(_write(tmp_path / "empty.tsv", b"")) == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_text_pairs(tmp_path / "absent.tsv")


GOOD_TSV = b"one\tuno\n"
GOOD_JSONL = b'{"src": "one", "tgt": "uno"}\n'


@pytest.mark.parametrize(
    ("name", "bad_line", "reason"),
    [
        ("three_columns.tsv", b"a\tb\tc\n", "expected 2 tab-separated fields"),
        ("one_column.tsv", b"just one side\n", "found 1"),
        ("latin1.tsv", b"se\xf1or\tsir\n", "invalid UTF-8"),
        ("empty_source.tsv", b"\tuno\n", "empty source text"),
        ("empty_target.tsv", b"one\t  \n", "empty target text"),
        ("bad.jsonl", b'{"src": "a", "tgt": \n', "invalid JSON"),
        ("missing.jsonl", b'{"src": "a"}\n', "field 'tgt' missing or not a string"),
        ("number.jsonl", b'{"src": 3, "tgt": "b"}\n', "field 'src' missing or not a string"),
        ("array.jsonl", b'["a", "b"]\n', "expected a JSON object"),
        ("empty.jsonl", b'{"src": "a", "tgt": " "}\n', "empty target text"),
        ("utf8.jsonl", b'{"src": "\xff", "tgt": "b"}\n', "invalid UTF-8"),
    ],
)
def test_malformed_line_names_file_and_line(
    tmp_path: Path, name: str, bad_line: bytes, reason: str
) -> None:
    good = GOOD_JSONL if name.endswith(".jsonl") else GOOD_TSV
    # Two good lines and a blank one first, so the line number is not trivially 1.
    path = _write(tmp_path / name, good + b"\n" + good + bad_line + good)
    with pytest.raises(DataFormatError) as info:
        read_text_pairs(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: ")
    assert reason in message
    assert isinstance(info.value, ValueError)
