"""Readers for parallel text: TSV (source TAB target) and JSONL ({"src": ..., "tgt": ...})."""

from __future__ import annotations

import json
from pathlib import Path


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


def parse_pair_line(raw: bytes, line_no: int, path: Path, is_jsonl: bool) -> tuple[str, str] | None:
    """The (source, target) of one raw line (with its newline), or None for a blank line.

    Raises:
      DataFormatError: naming ``path:line_no``.
    """
    where = f"{path}:{line_no}"
    try:
        # utf-8-sig drops the byte-order mark some editors put at the file start.
        line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{where}: invalid UTF-8 ({e.reason} at byte {e.start})") from None
    if not line.strip():
        return None
    if is_jsonl:
        src, tgt = _parse_jsonl(line, where)
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


def _parse_jsonl(line: str, where: str) -> tuple[str, str]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{where}: invalid JSON ({e.msg})") from None
    except RecursionError:
        raise DataFormatError(f"{where}: invalid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected a JSON object with 'src' and 'tgt'")
    for key in ("src", "tgt"):
        if not isinstance(obj.get(key), str):
            raise DataFormatError(f"{where}: field '{key}' missing or not a string")
    return obj["src"], obj["tgt"]
