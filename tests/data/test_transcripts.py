"""Transcript normalization and spelled-out numbers."""

from __future__ import annotations

import pytest

from seqlab.data.transcripts import normalize_transcript, spell_out_number, spoken_form


def test_normalize_transcript() -> None:
    assert normalize_transcript("Naomi\u2019s  husband, Elimelech, died!") == (
        "naomi's husband elimelech died"
    )
    assert normalize_transcript("'Quoted' words -- and_under") == "quoted words and under"
    assert normalize_transcript("  ") == ""


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (40, "forty"),
        (99, "ninety nine"),
        (120, "one hundred twenty"),
        (1611, "one thousand six hundred eleven"),
        (2_000_003, "two million three"),
    ],
)
def test_spell_out_number(number: int, words: str) -> None:
    assert spell_out_number(number) == words


def test_spoken_form_folds_to_ascii_and_spells_digits() -> None:
    assert spoken_form("C\u00e6sar paid 30 pieces; caf\u00e9!") == "caesar paid thirty pieces cafe"
