"""The plain-text reader: one line a sequence, blank lines skipped, bad bytes named."""

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
