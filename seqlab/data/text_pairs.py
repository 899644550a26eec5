"""Readers for parallel text: TSV (source TAB target), JSONL ({"src": ..., "tgt": ...}) and
Parquet (string columns ``src`` and ``tgt``); the line decoding, JSON fields and Parquet
columns that the readers of plain text (seqlab.data.text_lines) share."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DataFormatError(ValueError):
    """A malformed data line; the message names the file and line number."""


def read_text_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Reads source/target pairs from a ``.tsv`` or ``.jsonl`` file.

    TSV lines hold exactly two tab-separated fields; JSONL lines are objects with string
    fields ``src`` and ``tgt``. Blank lines are skipped.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      DataFormatError: naming ``path:line`` for a malformed line (wrong field count, invalid
        UTF-8, empty text, bad JSON).
    """
    path = check_data_file(path)
    if is_parquet_file(path):
        return [
            check_parquet_row(src, tgt, first + offset, path)
            for first, rows in iter_parquet_rows(path)
            for offset, (src, tgt) in enumerate(rows)
        ]
    is_jsonl = is_jsonl_file(path)
    pairs: list[tuple[str, str]] = []
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            pair = parse_pair_line(raw, line_no, path, is_jsonl)
            if pair is not None:
                pairs.append(pair)
    return pairs


def check_data_file(path: str | Path) -> Path:
    """``path`` as a Path, if it is a file; else FileNotFoundError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return path


def is_jsonl_file(path: Path) -> bool:
    return path.suffix in (".jsonl", ".json")


def is_parquet_file(path: Path) -> bool:
    return path.suffix == ".parquet"


PARQUET_COLUMNS = ("src", "tgt")


def iter_parquet_rows(
    path: Path,
    rows_per_batch: int = 20_000,
    start_row: int = 0,
    columns: tuple[str, ...] = PARQUET_COLUMNS,
) -> Iterator[tuple[int, list[tuple[Any, ...]]]]:
    """(number of the batch's first row, its values of ``columns``) over a Parquet file, in
    order from row ``start_row`` (0-based), read a record batch at a time (rows are numbered
    from 1). Row groups before ``start_row`` are not read.

    Raises:
      DataFormatError: when the file is not Parquet or lacks one of ``columns``.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFormatError(
            f"{path}: reading Parquet needs pyarrow (pip install pyarrow)"
        ) from None
    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for a damaged file
        raise DataFormatError(f"{path}: not a readable Parquet file ({e})") from None
    names = table.schema_arrow.names
    if not all(name in names for name in columns):
        needed = " and ".join(f"'{name}'" for name in columns)
        plural = "s" if len(columns) > 1 else ""
        raise DataFormatError(
            f"{path}: this Parquet file needs string column{plural} {needed}; it has {names}"
        )
    groups, first = [], 0
    for index in range(table.num_row_groups):
        rows_in_group = table.metadata.row_group(index).num_rows
        if first + rows_in_group > start_row or groups:
            groups.append(index)
        else:
            first += rows_in_group
    skip = start_row - first
    first += 1
    batches = table.iter_batches(
        batch_size=rows_per_batch, row_groups=groups, columns=list(columns)
    )
    for batch in batches if groups else ():
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            first += batch.num_rows
            continue
        batch = batch.slice(skip)
        first, skip = first + skip, 0
        values = (batch.column(i).to_pylist() for i in range(len(columns)))
        rows = list(zip(*values, strict=True))
        yield first, rows
        first += len(rows)


def check_parquet_strings(
    values: tuple[Any, ...], columns: tuple[str, ...], row_no: int, path: Path
) -> None:
    """Raises DataFormatError, naming ``path``, the row and the column, for a value of a
    Parquet row that is not a string (a null)."""
    for name, value in zip(columns, values, strict=True):
        if not isinstance(value, str):
            raise DataFormatError(f"{path}: row {row_no}: column '{name}' is not a string")


def check_parquet_row(src: Any, tgt: Any, row_no: int, path: Path) -> tuple[str, str]:
    """A Parquet row's (source, target), stripped.

    Raises:
      DataFormatError: naming ``path``, the row and the column that is missing or empty.
    """
    check_parquet_strings((src, tgt), PARQUET_COLUMNS, row_no, path)
    for name, value in zip(PARQUET_COLUMNS, (src, tgt), strict=True):
        if not value.strip():
            side = "source" if name == "src" else "target"
            raise DataFormatError(f"{path}: row {row_no}: empty {side} text")
    return src.strip(), tgt.strip()


def parse_pair_line(raw: bytes, line_no: int, path: Path, is_jsonl: bool) -> tuple[str, str] | None:
    """The (source, target) of one raw line (with its newline), or None for a blank line.

    Raises:
      DataFormatError: naming ``path:line_no``.
    """
    where = f"{path}:{line_no}"
    line = decode_line(raw, line_no, path)
    if not line.strip():
        return None
    if is_jsonl:
        src, tgt = parse_json_fields(line, where, PARQUET_COLUMNS)
    else:
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataFormatError(
                f"{where}: expected 2 tab-separated fields (source, target), found {len(fields)}"
            )
        src, tgt = fields
    if not src.strip() or not tgt.strip():
        side = "source" if not src.strip() else "target"
        raise DataFormatError(f"{where}: empty {side} text")
    return src.strip(), tgt.strip()


def decode_line(raw: bytes, line_no: int, path: Path) -> str:
    """One raw line of a text file (with its newline) as text, without the newline.

    Raises:
      DataFormatError: naming ``path:line_no`` and the byte of invalid UTF-8.
    """
    try:
        # utf-8-sig drops the byte-order mark some editors put at the file start.
        line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(
            f"{path}:{line_no}: invalid UTF-8 ({e.reason} at byte {e.start})"
        ) from None
    return line.rstrip("\r\n")


def parse_json_fields(line: str, where: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The string fields ``keys`` of the JSON object on ``line``.

    Raises:
      DataFormatError: naming ``where`` (file:line) for bad JSON, or a field that is missing
        or not a string.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{where}: invalid JSON ({e.msg})") from None
    except RecursionError:
        raise DataFormatError(f"{where}: invalid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        fields = " and ".join(f"'{key}'" for key in keys)
        raise DataFormatError(f"{where}: expected a JSON object with {fields}")
    for key in keys:
        if not isinstance(obj.get(key), str):
            raise DataFormatError(f"{where}: field '{key}' missing or not a string")
    return tuple(obj[key] for key in keys)
