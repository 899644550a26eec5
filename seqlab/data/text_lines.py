"""Reader for plain text: one sentence or paragraph per line (the user's own monolingual data)."""

from __future__ import annotations

from pathlib import Path

from seqlab.data.text_pairs import DataFormatError


def read_text_lines(path: str | Path) -> list[str]:
    """Reads the non-blank lines of a UTF-8 text file, stripped of surrounding whitespace.

    A byte-order mark at the start of the file is dropped; blank lines are skipped.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      DataFormatError: naming ``path:line`` and the byte offset of invalid UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    lines: list[str] = []
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataFormatError(
                    f"{path}:{line_no}: invalid UTF-8 ({e.reason} at byte {e.start})"
                ) from None
            line = line.strip()
            if line:
                lines.append(line)
    return lines
