"""Audio manifest reader: relative paths, resampling, and every kind of broken line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlab.data.audio_manifest import ManifestError, read_manifest


def _tone(path: Path, seconds: float = 0.25, rate: int = 16000, fmt: str = "WAV") -> Path:
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * 300 * t), rate, format=fmt)
    return path


def _manifest(directory: Path, lines: list[object]) -> Path:
    path = directory / "m.jsonl"
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def test_reads_relative_paths_flac_and_resamples(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    _tone(tmp_path / "audio" / "a.wav")
    _tone(tmp_path / "audio" / "b.flac", rate=8000, fmt="FLAC")
    manifest = _manifest(
        tmp_path,
        [
            {"id": "a", "audio": "audio/a.wav", "duration": 0.25, "text": "Hello there."},
            "",
            {"audio": str(tmp_path / "audio" / "b.flac"), "text": "second one"},
        ],
    )
    result = read_manifest(manifest, sample_rate=16000, resample=True)
    assert [e.id for e in result.entries] == ["a", "m-3"]
    assert [e.num_samples for e in result.entries] == [4000, 4000]
    assert result.entries[0].audio == tmp_path / "audio" / "a.wav"
    assert result.entries[0].text == "Hello there."
    assert result.num_skipped == 0


BROKEN = {
    "bad json": ("{not json", "invalid JSON"),
    "not an object": ("[1, 2]", "expected a JSON object"),
    "missing transcript": ({"audio": "a.wav"}, "missing transcript"),
    "empty transcript": ({"audio": "a.wav", "text": "  "}, "missing transcript"),
    "missing audio field": ({"text": "hi"}, "field 'audio'"),
    "missing file": ({"audio": "nope.wav", "text": "hi"}, "not found"),
    "unreadable file": ({"audio": "junk.wav", "text": "hi"}, "unreadable audio"),
    "empty audio": ({"audio": "empty.wav", "text": "hi"}, "empty audio"),
    "wrong rate": ({"audio": "slow.wav", "text": "hi"}, "sample rate 8000 Hz"),
}


@pytest.mark.parametrize("verify_audio", [True, False])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_line_is_refused_with_file_and_line(
    tmp_path: Path, case: str, verify_audio: bool
) -> None:
    _tone(tmp_path / "a.wav")
    _tone(tmp_path / "slow.wav", rate=8000)
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wave file")
    soundfile.write(str(tmp_path / "empty.wav"), np.zeros(0), 16000)
    line, message = BROKEN[case]
    manifest = _manifest(tmp_path, [{"audio": "a.wav", "text": "fine"}, line])
    with pytest.raises(ManifestError, match=message) as error:
        read_manifest(manifest, 16000, resample=False, verify_audio=verify_audio)
    assert str(error.value).startswith(f"{manifest}:2: ")
    skipped = read_manifest(
        manifest, 16000, resample=False, bad_input="skip", verify_audio=verify_audio
    )
    assert [e.text for e in skipped.entries] == ["fine"]
    assert skipped.num_skipped == 1 and skipped.problems[0].startswith(f"{manifest}:2: ")


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="audio manifest not found"):
        read_manifest(tmp_path / "none.jsonl", 16000)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(min_value=0, max_value=200), noise=st.binary(min_size=0, max_size=64))
def test_corrupt_audio_is_skipped_or_read_never_crashes(
    tmp_path: Path, cut: int, noise: bytes
) -> None:
    """A WAV truncated anywhere and followed by junk is either usable or a reported problem."""
    good = _tone(tmp_path / "good.wav", seconds=0.01)
    data = good.read_bytes()
    (tmp_path / "bad.wav").write_bytes(data[:cut] + noise)
    manifest = _manifest(
        tmp_path, [{"audio": "bad.wav", "text": "x"}, {"audio": "good.wav", "text": "y"}]
    )
    result = read_manifest(manifest, 16000, bad_input="skip")
    assert result.entries[-1].text == "y"
    assert len(result.entries) + result.num_skipped == 2
    for entry in result.entries:
        assert entry.num_samples > 0
