"""Plain-text inference input: UTF-8 lines without control characters, one input per line.

``seqlab infer`` reads its file or stdin as bytes and splits it here, so that invalid UTF-8
or a control character (often a sign of a binary file or a terminal escape) is refused with
the source and line number instead of a traceback or a garbled translation.
"""

from __future__ import annotations

import re

# Unicode category Cc except tab, and lone surrogates (a str can hold them, UTF-8 cannot).
_NOT_PLAIN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
_BOM = b"\xef\xbb\xbf"


class InputTextError(ValueError):
    """Inference input that is not plain text; the message names the line or input."""


def _not_plain_text(text: str) -> str | None:
    """What makes ``text`` not plain text, or None."""
    found = _NOT_PLAIN.search(text)
    if found is None:
        return None
    code = ord(found.group())
    kind = "lone surrogate" if 0xD800 <= code <= 0xDFFF else "control character"
    return f"{kind} U+{code:04X} at column {found.start() + 1}; expected plain text"


def check_plain_text(texts: list[str]) -> None:
    """Raises InputTextError naming the first text with a control character (tab is fine)."""
    for i, text in enumerate(texts):
        problem = _not_plain_text(text)
        if problem:
            raise InputTextError(f"input {i}: {problem}")


def read_input_lines(raw: bytes, source: str) -> list[str]:
    """The lines of ``raw`` (split on LF; a CR before it and a leading BOM are dropped).

    A final line without LF counts; empty lines are inputs too.

    Raises:
      InputTextError: ``source:line: ...`` for invalid UTF-8 or a control character.
    """
    chunks = raw.removeprefix(_BOM).split(b"\n")
    if chunks[-1] == b"":
        chunks.pop()
    lines = []
    for number, chunk in enumerate(chunks, 1):
        chunk = chunk.removesuffix(b"\r")
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputTextError(
                f"{source}:{number}: invalid UTF-8 (byte 0x{chunk[e.start]:02x} at byte "
                f"{e.start + 1} of the line)"
            ) from None
        problem = _not_plain_text(text)
        if problem:
            raise InputTextError(f"{source}:{number}: {problem}, one input per line")
        lines.append(text)
    return lines
