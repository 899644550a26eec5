"""The built-in corpora by name, and where their prepared files live in the cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from seqlab.core.config import ConfigError
from seqlab.data.corpora.bible import prepare_bible_monolingual, prepare_bible_pair

# name -> function(out_dir) that prepares train/dev/test files and returns their paths.
_PARALLEL: dict[str, Callable[[Path], dict[str, Path]]] = {
    "bible_en_es": lambda out: prepare_bible_pair("engKJV2006eb", "spaRV1909eb", out),
}


def _prepare_flite_bible(out_dir: Path) -> dict[str, Path]:
    # Imported here: speech preparation pulls in soundfile and scipy, which MT does not need.
    from seqlab.data.corpora.flite_bible import prepare_flite_bible

    return prepare_flite_bible(out_dir)


# name -> preparer of speech corpora, whose splits are JSONL audio manifests.
_SPEECH: dict[str, Callable[[Path], dict[str, Path]]] = {"flite_bible": _prepare_flite_bible}


def _prepare_bible_asr_lm(out_dir: Path) -> dict[str, Path]:
    from seqlab.data.corpora.bible_asr_lm import prepare_bible_asr_lm

    return prepare_bible_asr_lm(out_dir)


# name -> preparer of monolingual corpora (language models), whose splits are .txt lines.
_MONOLINGUAL: dict[str, Callable[[Path], dict[str, Path]]] = {
    "bible_en": lambda out: prepare_bible_monolingual("engKJV2006eb", out),
    "bible_en_asr_lm": _prepare_bible_asr_lm,
}


class UnknownCorpusError(ConfigError):
    """A corpus name that is not built in; the message lists the built-in ones."""


class CorpusNotPreparedError(FileNotFoundError):
    """A built-in corpus whose files are not in the cache; the message says how to prepare it."""


def known_corpora() -> list[str]:
    return sorted(_PARALLEL | _SPEECH | _MONOLINGUAL)


def corpus_splits(name: str) -> tuple[str, ...]:
    """The splits of built-in corpus ``name``: speech corpora add ``dev2``, dev verses read by
    a held-out voice."""
    return ("train", "dev", "dev2", "test") if name in _SPEECH else ("train", "dev", "test")


def corpus_files(name: str, cache_dir: Path, prepare: bool = True) -> dict[str, Path]:
    """Paths of the files of corpus ``name`` by split (:func:`corpus_splits`), preparing them
    if needed.

    Raises:
      UnknownCorpusError: for an unknown corpus name, listing the known ones.
      CorpusNotPreparedError: if the files are missing and ``prepare`` is False, naming the
        command that prepares them.
    """
    preparers = _PARALLEL | _SPEECH | _MONOLINGUAL
    if name not in preparers:
        raise UnknownCorpusError(
            f"unknown corpus '{name}'; built-in corpora: {', '.join(known_corpora())}"
        )
    out_dir = cache_dir / "corpora" / name
    if not prepare:
        suffix = ".jsonl" if name in _SPEECH else ".txt" if name in _MONOLINGUAL else ".tsv"
        files = {split: out_dir / f"{split}{suffix}" for split in corpus_splits(name)}
        missing = [str(p) for p in files.values() if not p.exists()]
        if missing:
            raise CorpusNotPreparedError(
                f"corpus '{name}' is not prepared ({missing[0]} missing); "
                f"run `seqlab data prepare {name}`"
            )
        return files
    return preparers[name](out_dir)
