"""Transcript normalization shared by the speech corpora, the ASR input and WER scoring.

The normalization applied before scoring (and, by default, before tokenizing transcripts) is:
lowercase; typographic apostrophes to ``'``; every character that is not a letter, a digit or
an apostrophe inside a word becomes a space; runs of spaces collapse to one. So
``"Naomi's husband, Elimelech, died!"`` and ``"naomi's husband elimelech died"`` score as
equal. :func:`spoken_form` additionally spells out digits and folds letters to ASCII, for text
that a synthesizer reads aloud.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NOT_WORD = re.compile(r"[^\w']+|_")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'+|'+(?!\w)")
_DIGITS = re.compile(r"\d+")
_LIGATURES = str.maketrans({"æ": "ae", "Æ": "Ae", "œ": "oe", "Œ": "Oe", "ß": "ss"})

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))


def normalize_transcript(text: str) -> str:
    """Lowercase words without punctuation, single-spaced (see the module docstring)."""
    text = text.translate(_APOSTROPHES).lower()
    text = _NOT_WORD.sub(" ", text)
    text = _LOOSE_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())


def spell_out_number(number: int) -> str:
    """English words for a non-negative integer, e.g. ``120 -> "one hundred twenty"``."""
    if number < 0:
        raise ValueError(f"spell_out_number takes a non-negative integer, got {number}")
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    for scale, name in _SCALES:
        if number >= scale:
            high, rest = divmod(number, scale)
            words = f"{spell_out_number(high)} {name}"
            return words + (f" {spell_out_number(rest)}" if rest else "")
    raise AssertionError("unreachable")


def spoken_form(text: str) -> str:
    """``text`` as plain ASCII words a synthesizer reads unambiguously, digits spelled out.

    Returns:
      The normalized transcript (:func:`normalize_transcript`) of the folded text: the exact
      words of the audio a synthesizer makes from it.
    """
    text = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _DIGITS.sub(lambda m: f" {spell_out_number(int(m.group()))} ", text)
    return normalize_transcript(text.encode("ascii", "ignore").decode())


def labels_to_transcript(tokenizer: SentencePieceTokenizer, ids: list[int]) -> str:
    """A recognizer's output labels as text, single-spaced.

    A char tokenizer trained on little text may have fewer tokens than output labels; labels
    past it never occur in training targets and are dropped. CTC may emit two word boundaries
    in a row; they show as one space.
    """
    size = tokenizer.vocab_size
    return " ".join(tokenizer.decode([i for i in ids if i < size]).split())
