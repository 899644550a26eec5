"""The voice inventory is every English voice installed, and rate and pitch reach the audio."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from seqlab.data.audio_files import read_audio
from seqlab.data.corpora.tts_voices import (
    ESPEAK_VARIANTS,
    ESPEAK_VOICES,
    VOICES,
    Reading,
    missing_packages,
    synthesize,
)

TEXT = "in the beginning god created the heaven and the earth"
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="no espeak-ng")


def _espeak_list(option: str) -> list[list[str]]:
    out = subprocess.run(["espeak-ng", option], capture_output=True, text=True, check=True)
    return [line.split() for line in out.stdout.splitlines()[1:]]


@needs_espeak
def test_every_english_accent_and_variant_of_espeak_is_in_the_inventory() -> None:
    # Column 4 is the voice file: gmw/* are espeak-ng's own voices, mb/* need mbrola.
    accents = {row[1] for row in _espeak_list("--voices=en") if row[4].startswith("gmw/")}
    assert accents == {v.name.split(":", 1)[1] for v in ESPEAK_VOICES}
    variants = {row[4].removeprefix("!v/") for row in _espeak_list("--voices=variant")}
    assert variants == set(ESPEAK_VARIANTS)


def _audio(tmp_path: Path, voice: str, speed: float, pitch: int | None) -> np.ndarray:
    path = tmp_path / f"{voice.replace(':', '-')}-{speed}-{pitch}.wav"
    variant = "m3" if voice.startswith("espeak:") else ""
    synthesize([Reading(TEXT, voice, variant, speed, pitch)], [path])
    return read_audio(path, 16000)


def _skip_unless_installed(voice: str) -> None:
    missing = missing_packages([voice])
    if missing:
        pytest.skip(f"{voice} needs {', '.join(missing)} (scripts/setup.sh installs it)")


@pytest.mark.parametrize("voice", sorted(VOICES))
def test_rate_reaches_every_voice_and_pitch_every_voice_that_claims_it(
    voice: str, tmp_path: Path
) -> None:
    _skip_unless_installed(voice)
    normal = _audio(tmp_path, voice, 1.0, None)
    slow = _audio(tmp_path, voice, 1.3, None)
    assert len(slow) > 1.15 * len(normal)
    pitch_range = VOICES[voice].pitch_range
    low, high = pitch_range or (80, 140)
    lower, higher = _audio(tmp_path, voice, 1.0, low), _audio(tmp_path, voice, 1.0, high)
    differs = lower.shape != higher.shape or not np.array_equal(lower, higher)
    # A voice without a pitch range must really ignore pitch: else it should draw one.
    assert differs == (pitch_range is not None)


def test_an_unknown_voice_is_named() -> None:
    with pytest.raises(ValueError, match="unknown voice 'flite:nobody'; voices: flite:kal16"):
        missing_packages(["flite:nobody"])


def test_festival_readings_in_one_process_sound_as_each_alone(tmp_path: Path) -> None:
    for name in ("festival:ked", "festival:slt_hts"):
        _skip_unless_installed(name)
    readings = [
        Reading(TEXT, "festival:ked", "", 1.1, 130),
        Reading("and god said let there be light", "festival:slt_hts", "", 0.95, None),
        Reading(TEXT, "festival:ked", "", 1.0, 90),
        Reading(TEXT, "flite:kal16", "", 1.0, 100),
    ]
    together = [tmp_path / f"together{i}.wav" for i in range(len(readings))]
    durations = synthesize(readings, together)
    for i, reading in enumerate(readings):
        alone = tmp_path / f"alone{i}.wav"
        assert synthesize([reading], [alone]) == [durations[i]]
        np.testing.assert_array_equal(read_audio(together[i], 16000), read_audio(alone, 16000))
