"""flite_bible: the plan holds out verses and two speakers; every voice reads; meta.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import soundfile

from seqlab.data.corpora.flite_bible import (
    DEV2_VOICE,
    SPEED_RANGE,
    SPLITS,
    TEST_VOICE,
    FliteBibleRequest,
    Utterance,
    plan_utterances,
    prepare_flite_bible,
    select_verses,
)
from seqlab.data.corpora.tts_voices import ESPEAK_VARIANTS, VOICES, missing_packages

VERSES = [f"verse number {i} has some words in it" for i in range(40)]


def test_select_verses_normalizes_filters_and_dedupes() -> None:
    lines = ["In the beginning God created.", "Jesus wept.", "IN THE BEGINNING GOD CREATED"]
    assert select_verses(lines, 3, 10) == ["in the beginning god created"]


def _by_split(plan: list[Utterance]) -> dict[str, list[Utterance]]:
    return {s: [u for u in plan if u.split == s] for s in SPLITS}


def test_plan_holds_out_verses_and_the_dev2_and_test_speakers() -> None:
    request = FliteBibleRequest(num_train=50, num_dev=5, num_dev2=4, num_test=6)
    plan = plan_utterances(select_verses(VERSES, 1, 20), request)
    by_split = _by_split(plan)
    assert [len(v) for v in by_split.values()] == [50, 5, 4, 6]
    train_text = {u.text for u in by_split["train"]}
    assert not train_text & {u.text for u in by_split["dev"] + by_split["test"]}
    assert [u.text for u in by_split["dev2"]] == [u.text for u in by_split["dev"]][:4]
    assert {u.voice for u in by_split["dev2"]} == {DEV2_VOICE}
    assert {u.voice for u in by_split["test"]} == {TEST_VOICE}
    seen = {VOICES[u.voice].speaker for u in by_split["train"] + by_split["dev"]}
    assert not seen & {VOICES[DEV2_VOICE].speaker, VOICES[TEST_VOICE].speaker}
    assert plan == plan_utterances(select_verses(VERSES, 1, 20), request)
    with pytest.raises(ValueError, match="num_dev \\+ num_test"):
        plan_utterances(VERSES[:5], request)


def test_training_reads_every_voice_accent_and_variant_with_pitch_and_rate() -> None:
    verses = [f"verse {i} has words" for i in range(3000)]
    by_split = _by_split(plan_utterances(verses, FliteBibleRequest()))
    train = by_split["train"]
    assert {u.voice for u in train} == set(VOICES) - {DEV2_VOICE, TEST_VOICE}
    assert {u.variant for u in train if u.voice.startswith("espeak:")} == {"", *ESPEAK_VARIANTS}
    assert not {u.variant for u in train if not u.voice.startswith("espeak:")} - {""}
    for voice in ("flite:slt", "flite:awb", "espeak:en-029"):
        pitches = {u.pitch for u in train if u.voice == voice}
        low, high = VOICES[voice].pitch_range or (0, 0)
        assert len(pitches) > 10 and min(pitches) >= low and max(pitches) <= high
    assert {u.pitch for u in by_split["test"]} == {None}  # flite's rms ignores pitch
    assert len({u.speed for u in train}) > 20


def test_holding_out_a_voice_holds_out_its_speaker() -> None:
    request = FliteBibleRequest(num_train=200, num_dev=5, num_dev2=5, num_test=5)
    plan = plan_utterances(VERSES, dataclasses.replace(request, dev2_voice="flite:kal"))
    assert not {"flite:kal", "flite:kal16"} & {u.voice for u in plan if u.split == "train"}
    for bad, match in (
        ({"dev2_voice": "flite:kal", "test_voice": "flite:kal16"}, "same speaker"),
        ({"num_dev2": 6}, "num_dev2 = 6 reads dev verses"),
        ({"dev2_voice": "flite:nobody"}, "unknown voice 'flite:nobody'"),
        ({"test_voice": "festival:slt_hts", "festival_fraction": 0.5}, "festival reads 50%"),
        ({"espeak_fraction": 0.7, "festival_fraction": 0.4}, "add up to at most 1"),
    ):
        with pytest.raises(ValueError, match=match):
            plan_utterances(VERSES, dataclasses.replace(request, **bad))


def test_prepare_synthesizes_16khz_manifests_with_voices_and_reuses_them(
    tmp_path: Path,
) -> None:
    request = FliteBibleRequest(
        num_train=8,
        num_dev=2,
        num_dev2=2,
        num_test=2,
        espeak_fraction=0.4,
        festival_fraction=0.2,
        max_words=8,
    )
    verses = select_verses(VERSES, 1, 20)
    missing = missing_packages(sorted({u.voice for u in plan_utterances(verses, request)}))
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh installs them)")
    out = tmp_path / "corpora" / "flite_bible"
    paths = prepare_flite_bible(out, request, show_progress=False)
    rows = {s: [json.loads(x) for x in paths[s].read_text().splitlines()] for s in SPLITS}
    assert [len(r) for r in rows.values()] == [8, 2, 2, 2]
    for row in sum(rows.values(), []):
        info = soundfile.info(str(out / row["audio"]))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert row["duration"] == pytest.approx(info.duration, abs=1e-3)
        assert row["text"] and row["text"] == row["text"].lower()
        voice = VOICES[row["voice"]]
        assert (row["speaker"], row["accent"]) == (voice.speaker, voice.accent)
        assert (row["pitch"] is None) == (voice.pitch_range is None)
        assert SPEED_RANGE[0] <= row["speed"] <= SPEED_RANGE[1]
    assert {r["voice"] for r in rows["dev2"]} == {DEV2_VOICE}
    meta = json.loads(paths["meta"].read_text())
    assert (meta["dev2_voice"], meta["test_voice"]) == (DEV2_VOICE, TEST_VOICE)
    assert meta["splits"]["train"]["utterances"] == 8
    assert meta["voices"][DEV2_VOICE]["splits"] == ["dev2"]
    assert meta["voices"][TEST_VOICE] == {
        "speaker": "rms",
        "accent": "US",
        "package": "flite",
        "pitch_range": None,
        "splits": ["test"],
    }
    assert set(meta["voices"]) == {r["voice"] for r in sum(rows.values(), [])}
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("audio/*/*.wav")}
    assert prepare_flite_bible(out, request, show_progress=False) == paths
    assert {p: p.stat().st_mtime_ns for p in out.glob("audio/*/*.wav")} == stamp
