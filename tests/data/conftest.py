"""Shared test data: small generated English/Spanish sentence pairs, and speech input on a
generated manifest."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from seqlab.data.asr_data import ASRData

# Aligned word lists, so each generated pair is a (crude) translation.
_SUBJECTS = [
    ("the man", "el hombre"),
    ("the woman", "la mujer"),
    ("the king", "el rey"),
    ("a child", "un nino"),
    ("the people", "el pueblo"),
    ("my brother", "mi hermano"),
]
_VERBS = [
    ("sees", "ve"),
    ("loves", "ama"),
    ("finds", "encuentra"),
    ("keeps", "guarda"),
    ("brings", "trae"),
    ("hears", "oye"),
]
_OBJECTS = [
    ("the bread", "el pan"),
    ("the water", "el agua"),
    ("a small house", "una casa pequena"),
    ("the old city", "la ciudad vieja"),
    ("the word", "la palabra"),
    ("a great light", "una gran luz"),
]
_ENDINGS = [("", ""), (" today", " hoy"), (" in the morning", " por la manana")]


def make_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """``count`` deterministic (english, spanish) sentence pairs."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        parts = [rng.choice(x) for x in (_SUBJECTS, _VERBS, _OBJECTS, _ENDINGS)]
        english = " ".join(p[0] for p in parts[:3]) + parts[3][0] + "."
        spanish = " ".join(p[1] for p in parts[:3]) + parts[3][1] + "."
        pairs.append((english.capitalize(), spanish.capitalize()))
    return pairs


@pytest.fixture(scope="session")
def sentence_pairs() -> Callable[[int, int], list[tuple[str, str]]]:
    return make_pairs


def _speech_data(directory: Path, **overrides: object) -> ASRData:
    manifest = str(directory / "train.jsonl")
    config = ASRData.Config(
        corpus="",
        cache_dir=str(directory / "cache"),
        train_path=manifest,
        dev_path=manifest,
        test_path=manifest,
        max_batch_seconds=1.2,
        eval_max_batch_seconds=1.2,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    data = config.build()
    data.load_tokenizer()
    return data


@pytest.fixture
def speech_data() -> Callable[..., ASRData]:
    """``speech_data(directory, **config_fields)``: an ASRData on ``directory/train.jsonl``
    (every split; see ``manifest_dir``) in 1.2 s batches, with its tokenizer loaded."""
    return _speech_data
