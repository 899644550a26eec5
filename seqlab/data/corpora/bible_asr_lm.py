"""``bible_en_asr_lm``: KJV text for a language model to fuse with a ``flite_bible`` recognizer.

The lines of ``bible_en`` (all three splits) in the recognizer's spoken form
(:func:`~seqlab.data.transcripts.spoken_form`: lowercase words, digits spelled out), without
any verse that ``flite_bible`` holds out for dev or test, and without any line that contains
one of those verses: 296 of the 300 test verses are ``bible_en`` lines, so a language model
trained on ``bible_en`` itself would have seen the test transcripts. The held-out verses are
those of the default :class:`~seqlab.data.corpora.flite_bible.FliteBibleRequest`; they are
computed from the text alone, without synthesizing any audio.

Files: ``{train,dev,test}.txt`` (``bible_en``'s book split) and ``meta.json`` (the request and
how many lines were removed); a directory prepared for the same request is reused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from seqlab.core.atomic_files import write_atomic
from seqlab.data.corpora.bible import prepare_bible_monolingual
from seqlab.data.corpora.flite_bible import (
    BIBLE_MODULE,
    TEXT_SPLITS,
    FliteBibleRequest,
    plan_from_bible,
    prepared_for,
)
from seqlab.data.transcripts import spoken_form

FORMAT_VERSION = 1
"""Bumped whenever the prepared files change, so that old caches are rebuilt."""


def held_out_verses(bible: dict[str, Path], request: FliteBibleRequest) -> set[str]:
    """The transcripts of every ``flite_bible`` utterance outside its training split."""
    return {u.text for u in plan_from_bible(bible, request) if u.split != "train"}


def keeps_out(line: str, held_out: set[str]) -> bool:
    """Whether a spoken-form line is, or contains as whole words, a held-out verse."""
    padded = f" {line} "
    return any(f" {verse} " in padded for verse in held_out)


def prepare_bible_asr_lm(
    out_dir: Path, request: FliteBibleRequest | None = None
) -> dict[str, Path]:
    """Writes (or reuses) the ``bible_en_asr_lm`` corpus in ``out_dir``.

    Args:
      out_dir: Output directory; the KJV text is prepared in ``out_dir/../bible_en``.
      request: The ``flite_bible`` corpus whose dev and test verses are removed; defaults to
        the built-in one.

    Returns:
      Paths by name: ``"train"``, ``"dev"``, ``"test"`` (text files) and ``"meta"``.
    """
    request = request or FliteBibleRequest()
    out_dir = Path(out_dir)
    paths = {split: out_dir / f"{split}.txt" for split in TEXT_SPLITS}
    paths["meta"] = out_dir / "meta.json"
    wanted = {"format_version": FORMAT_VERSION, **dataclasses.asdict(request)}
    if prepared_for(paths, wanted):
        return paths

    bible = prepare_bible_monolingual(BIBLE_MODULE, out_dir.parent / "bible_en")
    held_out = held_out_verses(bible, request)
    removed = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in TEXT_SPLITS:
        lines = [spoken_form(ln) for ln in bible[split].read_text(encoding="utf-8").splitlines()]
        kept = [ln for ln in lines if ln and not keeps_out(ln, held_out)]
        removed[split] = len(lines) - len(kept)
        write_atomic(paths[split], "".join(f"{ln}\n" for ln in kept).encode())
    meta = {
        "request": wanted,
        "held_out_verses": len(held_out),
        "removed_lines": removed,
        "text": f"{BIBLE_MODULE} (King James Version) in spoken form, without the "
        "flite_bible dev and test verses",
    }
    write_atomic(paths["meta"], (json.dumps(meta, indent=2) + "\n").encode())
    return paths
