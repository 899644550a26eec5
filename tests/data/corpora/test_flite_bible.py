"""flite_bible: the plan holds out verses and a voice; synthesis writes 16 kHz WAV; reuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile

from seqlab.data.corpora.flite_bible import (
    TEST_VOICE,
    FliteBibleRequest,
    plan_utterances,
    prepare_flite_bible,
    select_verses,
)

VERSES = [f"verse number {i} has some words in it" for i in range(40)]


def test_select_verses_normalizes_filters_and_dedupes() -> None:
    lines = ["In the beginning God created.", "Jesus wept.", "IN THE BEGINNING GOD CREATED"]
    assert select_verses(lines, 3, 10) == ["in the beginning god created"]


def test_plan_holds_out_verses_and_the_test_voice() -> None:
    request = FliteBibleRequest(num_train=50, num_dev=5, num_test=6)
    plan = plan_utterances(select_verses(VERSES, 1, 20), request)
    by_split = {s: [u for u in plan if u.split == s] for s in ("train", "dev", "test")}
    assert [len(v) for v in by_split.values()] == [50, 5, 6]
    train_text = {u.text for u in by_split["train"]}
    assert not train_text & {u.text for u in by_split["dev"] + by_split["test"]}
    assert {u.voice for u in by_split["test"]} == {TEST_VOICE}
    assert TEST_VOICE not in {u.voice for u in by_split["train"] + by_split["dev"]}
    assert any(u.voice.startswith("espeak:") for u in by_split["train"])
    assert plan == plan_utterances(select_verses(VERSES, 1, 20), request)
    with pytest.raises(ValueError, match="num_dev \\+ num_test"):
        plan_utterances(VERSES[:5], request)


@pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("espeak-ng") is None,
    reason="flite and espeak-ng are not installed (apt-get install flite espeak-ng)",
)
def test_prepare_synthesizes_16khz_manifests_and_reuses_them(tmp_path: Path) -> None:
    request = FliteBibleRequest(
        num_train=6, num_dev=2, num_test=2, espeak_fraction=0.5, max_words=8
    )
    out = tmp_path / "corpora" / "flite_bible"
    paths = prepare_flite_bible(out, request, show_progress=False)
    rows = {
        s: [json.loads(x) for x in paths[s].read_text().splitlines()]
        for s in ("train", "dev", "test")
    }
    assert [len(r) for r in rows.values()] == [6, 2, 2]
    for row in rows["train"] + rows["test"]:
        info = soundfile.info(str(out / row["audio"]))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert row["duration"] == pytest.approx(info.duration, abs=1e-3)
        assert row["text"] and row["text"] == row["text"].lower()
    meta = json.loads(paths["meta"].read_text())
    assert meta["test_voice"] == TEST_VOICE and meta["splits"]["train"]["utterances"] == 6
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("audio/*/*.wav")}
    assert prepare_flite_bible(out, request, show_progress=False) == paths
    assert {p: p.stat().st_mtime_ns for p in out.glob("audio/*/*.wav")} == stamp
