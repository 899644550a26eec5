"""The monolingual text readers: one line (or JSON record) a sequence, blank ones skipped,
bad bytes and records named."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqlab.data.text_lines import read_text_lines
from seqlab.data.text_pairs import DataFormatError


def test_reads_stripped_non_blank_lines_and_drops_bom(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_bytes("\ufeffIn the beginning.\n\n  And God said:  \r\nLet there be light.".encode())
    assert read_text_lines(path) == ["In the beginning.", "And God said:", "Let there be light."]


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good line\nbad \xff line\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2: invalid UTF-8 .* at byte 4"):
        read_text_lines(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        read_text_lines(tmp_path / "nothing.txt")


def test_jsonl_text_fields_are_read_and_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "text.jsonl"
    path.write_text('{"text": " In the beginning. "}\n\n{"text": ""}\n{"text": "And God said:"}\n')
    assert read_text_lines(path) == ["In the beginning.", "And God said:"]
    with path.open("a") as f:
        f.write('{"text": 3}\n')
    with pytest.raises(DataFormatError, match=r"text\.jsonl:5: field 'text' missing or not a"):
        read_text_lines(path)
    path.write_text('["text"]\n')
    with pytest.raises(DataFormatError, match=r"text\.jsonl:1: expected a JSON object with 'text'"):
        read_text_lines(path)
