"""Readers for monolingual text (one sentence, paragraph or document a record): plain text
(one a line), JSONL (``{"text": ...}`` a line) and Parquet (a string column ``text``).

Records are stripped of surrounding whitespace; blank ones (an empty line, or an empty
``text``) are skipped, as real corpora have them (WikiText's blank lines, empty rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqlab.data.text_pairs import (
    check_data_file,
    check_parquet_strings,
    decode_line,
    is_jsonl_file,
    is_parquet_file,
    iter_parquet_rows,
    parse_json_fields,
)

TEXT_FIELD = ("text",)
"""The JSON key and Parquet column of a record's text."""


def parse_text_line(raw: bytes, line_no: int, path: Path, is_jsonl: bool) -> str | None:
    """The text of one raw line (with its newline), or None for a blank one.

    Raises:
      DataFormatError: naming ``path:line_no`` (invalid UTF-8, bad JSON, no string ``text``).
    """
    line = decode_line(raw, line_no, path)
    if is_jsonl and line.strip():
        (line,) = parse_json_fields(line, f"{path}:{line_no}", TEXT_FIELD)
    return line.strip() or None


def check_parquet_text(value: Any, row_no: int, path: Path) -> str | None:
    """The text of a Parquet row's ``text`` value, stripped; None for a blank one.

    Raises:
      DataFormatError: naming ``path`` and the row whose ``text`` is not a string.
    """
    check_parquet_strings((value,), TEXT_FIELD, row_no, path)
    return value.strip() or None


def count_words(text: str) -> int:
    """Whitespace-separated words of ``text`` (per-word perplexity counts these)."""
    return len(text.split())


def read_text_lines(path: str | Path) -> list[str]:
    """Reads the non-blank texts of a plain-text, ``.jsonl``/``.json`` or ``.parquet`` file.

    A byte-order mark at the start of a text file is dropped.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      DataFormatError: naming ``path:line`` (or the Parquet row) of a malformed record.
    """
    path = check_data_file(path)
    if is_parquet_file(path):
        chunks = iter_parquet_rows(path, columns=TEXT_FIELD)
        rows = ((first + i, value) for first, chunk in chunks for i, (value,) in enumerate(chunk))
        texts = [check_parquet_text(value, row_no, path) for row_no, value in rows]
    else:
        is_jsonl = is_jsonl_file(path)
        with path.open("rb") as f:
            texts = [parse_text_line(raw, n, path, is_jsonl) for n, raw in enumerate(f, start=1)]
    return [text for text in texts if text is not None]
