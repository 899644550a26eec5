"""Words and their labels: what the punctuator predicts for every word of plain text.

A sentence like ``And God said, Let there be light:`` becomes the plain words ``and god said
let there be light`` and, per word, a case label (lower, Capitalized, UPPER) and the
punctuation mark that follows it (none , . ? ! : ;). Marks before a word (opening quotes and
brackets) are not restored.
"""

from __future__ import annotations

import re

CASES = ("lower", "capitalized", "upper")
PUNCTUATION = ("", ",", ".", "?", "!", ":", ";")

# A word's core: from its first to its last letter or digit (keeps "Beth-lehem", "Naomi's").
_CORE = re.compile(r"^(\W*)(\w(?:.*\w)?)(\W*)$")


def case_of(word: str) -> int:
    """The case label of ``word``."""
    if len(word) > 1 and word.isupper():
        return CASES.index("upper")
    return CASES.index("capitalized") if word[:1].isupper() else CASES.index("lower")


def words_and_labels(sentence: str) -> tuple[list[str], list[int], list[int]]:
    """Splits a punctuated sentence into plain lowercase words and their labels.

    Returns:
      (words, case labels, punctuation labels), one entry per word; tokens without any
      letter or digit (a lone dash) are dropped.
    """
    words, cases, marks = [], [], []
    for token in sentence.split():
        match = _CORE.match(token)
        if match is None:
            continue
        _, core, trailing = match.groups()
        words.append(core.lower())
        cases.append(case_of(core))
        mark = next((c for c in trailing if c in PUNCTUATION[1:]), "")
        marks.append(PUNCTUATION.index(mark))
    return words, cases, marks


def plain_text(sentence: str) -> str:
    """What the punctuator reads: lowercase words without punctuation."""
    return " ".join(words_and_labels(sentence)[0])


def restore(words: list[str], cases: list[int], marks: list[int]) -> str:
    """The sentence from plain words and their labels."""
    out = []
    for word, case, mark in zip(words, cases, marks, strict=True):
        if CASES[case] == "upper":
            word = word.upper()
        elif CASES[case] == "capitalized":
            word = word[:1].upper() + word[1:]
        out.append(word + PUNCTUATION[mark])
    return " ".join(out)
