"""Reader of JSONL audio manifests: one utterance per line, ``{"audio": ..., "text": ...}``.

Each line is a JSON object with ``audio`` (a WAV/FLAC/... path, relative paths resolved
against the manifest's directory) and ``text`` (the transcript); ``id`` is optional
(default ``<manifest stem>-<line>``) and ``duration`` is ignored in favour of the file's own
length. A broken line (bad JSON, missing transcript, missing, unreadable or empty audio, or a
wrong sample rate when resampling is off) is either refused with an error naming the manifest
file and line, or skipped and reported, as the caller chooses.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from seqlab.data.audio_files import AudioError, audio_info, read_audio

BadInputPolicy = Literal["skip", "refuse"]


class ManifestError(ValueError):
    """A broken manifest line; the message names ``file:line`` and the problem."""


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One usable utterance of a manifest."""

    id: str
    audio: Path
    """Absolute or working-directory-relative path of the audio file."""
    num_samples: int
    """Length at the reader's sample rate (after any resampling)."""
    text: str
    """The transcript as written in the manifest."""
    where: str
    """``manifest:line``, for error messages."""


@dataclasses.dataclass
class Manifest:
    """The usable entries of a manifest and a message per skipped line."""

    path: Path
    entries: list[ManifestEntry]
    problems: list[str]

    @property
    def num_skipped(self) -> int:
        return len(self.problems)


@dataclasses.dataclass(frozen=True)
class LineChecker:
    """Checks the lines of one manifest (see ``read_manifest`` for the settings)."""

    manifest_path: Path
    sample_rate: int
    resample: bool = True
    bad_input: BadInputPolicy = "refuse"
    verify_audio: bool = True

    def check(self, raw: bytes, line_no: int, problems: list[str]) -> ManifestEntry | None:
        """The entry of line ``line_no``; None for a blank line, or for a broken one with
        ``bad_input="skip"``, whose message is appended to ``problems``.

        Raises:
          ManifestError: a broken line, with ``bad_input="refuse"``.
        """
        where = f"{self.manifest_path}:{line_no}"
        try:
            fields = parse_manifest_line(raw, line_no, self.manifest_path)
            if fields is None:
                return None
            num_samples = self._num_samples(fields[1])
        except (ManifestError, AudioError) as e:
            message = str(e) if str(e).startswith(where) else f"{where}: {e}"
            if self.bad_input == "refuse":
                raise ManifestError(message) from None
            problems.append(message)
            return None
        return ManifestEntry(fields[0], fields[1], num_samples, fields[2], where)

    def _num_samples(self, audio_path: Path) -> int:
        """Samples of the file at the reader's rate; raises AudioError for unusable audio."""
        if self.verify_audio:
            return len(read_audio(audio_path, self.sample_rate, self.resample))
        frames, rate = audio_info(audio_path)
        if frames == 0:
            raise AudioError(f"empty audio file {audio_path} (no samples)")
        if rate != self.sample_rate and not self.resample:
            raise AudioError(
                f"audio file {audio_path} has sample rate {rate} Hz, expected {self.sample_rate} Hz"
            )
        return round(frames * self.sample_rate / rate)


def read_manifest(
    path: str | Path,
    sample_rate: int,
    resample: bool = True,
    bad_input: BadInputPolicy = "refuse",
    verify_audio: bool = True,
) -> Manifest:
    """Reads and checks every line of a JSONL manifest.

    Args:
      path: The manifest.
      sample_rate: Rate the audio is used at.
      resample: Accept audio at other rates (it is resampled when read); if False such a
        file is a broken line.
      bad_input: ``"refuse"`` raises on the first broken line; ``"skip"`` leaves it out and
        records a message in ``Manifest.problems``.
      verify_audio: Decode every file once (finds corrupt data past a valid header); if
        False only the header is read.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ManifestError: a broken line, with ``bad_input="refuse"``.
    """
    path = check_manifest_file(path, bad_input)
    checker = LineChecker(path, sample_rate, resample, bad_input, verify_audio)
    manifest = Manifest(path=path, entries=[], problems=[])
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            entry = checker.check(raw, line_no, manifest.problems)
            if entry is not None:
                manifest.entries.append(entry)
    return manifest


def check_manifest_file(path: str | Path, bad_input: str) -> Path:
    """``path`` as a Path, after checking that it exists and that ``bad_input`` is known."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio manifest not found: {path}")
    if bad_input not in ("skip", "refuse"):
        raise ValueError(f"bad_input must be 'skip' or 'refuse', got {bad_input!r}")
    return path


def parse_manifest_line(
    raw: bytes, line_no: int, manifest_path: Path
) -> tuple[str, Path, str] | None:
    """(id, audio path, transcript) of one line, without looking at the audio; None for a
    blank line.

    Raises:
      ManifestError: naming ``manifest:line`` and what is wrong with it.
    """
    where = f"{manifest_path}:{line_no}"
    try:
        line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8").strip()
    except UnicodeDecodeError as e:
        raise ManifestError(f"{where}: invalid UTF-8 ({e.reason} at byte {e.start})") from None
    if not line:
        return None
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as e:
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
        raise ManifestError(f"{where}: invalid JSON ({reason})") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object with 'audio' and 'text'")
    audio, text = obj.get("audio"), obj.get("text")
    if not isinstance(audio, str) or not audio.strip():
        raise ManifestError(f"{where}: field 'audio' (the audio file path) missing or empty")
    if not isinstance(text, str) or not text.strip():
        raise ManifestError(f"{where}: missing transcript (field 'text' absent or empty)")
    utterance_id = obj.get("id", f"{manifest_path.stem}-{line_no}")
    if not isinstance(utterance_id, str | int):
        raise ManifestError(f"{where}: field 'id' must be a string")
    audio_path = Path(audio)
    if not audio_path.is_absolute():
        audio_path = manifest_path.parent / audio_path
    return str(utterance_id), audio_path, text.strip()
