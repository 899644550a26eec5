"""bible_en_asr_lm: the language model text shares no verse with flite_bible's dev and test."""

from __future__ import annotations

from pathlib import Path

from seqlab.data.corpora.bible_asr_lm import keeps_out
from seqlab.data.corpora.catalog import corpus_files
from seqlab.data.corpora.flite_bible import (
    TEXT_SPLITS,
    FliteBibleRequest,
    plan_utterances,
    select_verses,
)
from seqlab.data.transcripts import spoken_form


def test_keeps_out_whole_verses_and_lines_containing_them() -> None:
    held_out = {"jesus wept"}
    assert keeps_out("jesus wept", held_out)
    assert keeps_out("and jesus wept sore", held_out)
    assert not keeps_out("jesus weptest", held_out)
    assert not keeps_out("jesus went", held_out)


def test_lm_corpus_has_no_asr_dev_or_test_verse(bible_cache_dir: Path) -> None:
    bible = corpus_files("bible_en", bible_cache_dir)
    lm = corpus_files("bible_en_asr_lm", bible_cache_dir)
    # The ASR corpus's held-out verses, planned as prepare_flite_bible plans them.
    request = FliteBibleRequest()
    lines = [ln for s in TEXT_SPLITS for ln in bible[s].read_text(encoding="utf-8").splitlines()]
    plan = plan_utterances(select_verses(lines, request.min_words, request.max_words), request)
    held_out = {u.text for u in plan if u.split in ("dev", "test")}
    assert len(held_out) == request.num_dev + request.num_test
    # bible_en itself holds nearly all of them (which is why the filter exists) ...
    assert len(held_out & {spoken_form(ln) for ln in lines}) > 0.9 * len(held_out)
    # ... the language model's text none, not even inside a longer line.
    lm_lines = [ln for s in TEXT_SPLITS for ln in lm[s].read_text(encoding="utf-8").splitlines()]
    assert not held_out & set(lm_lines)
    assert not any(f" {v} " in f" {ln} " for ln in lm_lines for v in held_out)
    # It keeps the rest of the Bible, in the recognizer's spoken form.
    assert len(lm_lines) > 0.97 * len(lines)
    assert all(ln == spoken_form(ln) for ln in lm_lines[:1000])
