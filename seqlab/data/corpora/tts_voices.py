"""The English text-to-speech voices Debian packages, and the command that makes each speak.

Three synthesizers: ``flite`` (speakers kal, awb, rms, slt), ``espeak-ng`` (8 English accents,
each with any of 101 variants) and ``festival`` (the ``ked`` diphone voice and an HTS voice
of ``slt``). Rate reaches every voice; pitch reaches every voice except flite's ``rms`` and
festival's HTS voice, whose :attr:`Voice.pitch_range` is None (a drawn pitch would be a lie
in the metadata). tests/data/corpora/test_tts_voices.py checks that both change the audio.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from pathlib import Path

from seqlab.data.audio_files import AudioError, read_audio, write_wav

SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class Voice:
    """One synthesizer voice."""

    name: str
    """``<engine>:<voice>``: ``flite:kal16``, ``espeak:en-gb-scotland``, ``festival:ked``."""
    speaker: str
    """Who speaks: flite's ``kal`` and ``kal16`` are one speaker, and festival's ``slt_hts``
    is flite's ``slt``; every espeak-ng accent is the same formant synthesizer."""
    accent: str
    """The accent, in words."""
    package: str
    """The Debian package that holds the voice."""
    pitch_range: tuple[int, int] | None
    """Pitches drawn for this voice, both ends included: Hz for flite (``int_f0_target_mean``)
    and festival (``target_f0_mean``), 0-99 for espeak-ng (``-p``); None where the
    synthesizer ignores pitch for this voice."""

    @property
    def engine(self) -> str:
        return self.name.split(":", 1)[0]


FLITE_VOICES = (
    Voice("flite:kal16", "kal", "US", "flite", (80, 130)),
    Voice("flite:kal", "kal", "US (8 kHz)", "flite", (80, 130)),
    Voice("flite:awb", "awb", "Scottish", "flite", (85, 135)),
    Voice("flite:slt", "slt", "US", "flite", (140, 210)),
    Voice("flite:rms", "rms", "US", "flite", None),
)
ESPEAK_VOICES = tuple(
    Voice(f"espeak:{name}", "espeak-ng", accent, "espeak-ng", (30, 70))
    for name, accent in (
        ("en-gb", "British"),
        ("en-gb-x-rp", "British (Received Pronunciation)"),
        ("en-gb-scotland", "Scottish"),
        ("en-gb-x-gbclan", "British (Lancaster)"),
        ("en-gb-x-gbcwmd", "British (West Midlands)"),
        ("en-us", "US"),
        ("en-us-nyc", "US (New York City)"),
        ("en-029", "Caribbean"),
    )
)
"""Every English accent of espeak-ng 1.51 (``espeak-ng --voices=en``, without the mbrola
voices, which Debian does not ship)."""
FESTIVAL_VOICES = (
    Voice("festival:ked", "ked", "US", "festvox-kdlpc16k", (85, 135)),
    Voice("festival:slt_hts", "slt", "US", "festvox-us-slt-hts", None),
)
"""festival's other English voices in Debian repeat a flite speaker (kal) or need mbrola."""
VOICES = {v.name: v for v in FLITE_VOICES + ESPEAK_VOICES + FESTIVAL_VOICES}

ESPEAK_VARIANTS = tuple(
    """adam Alex Alicia Andrea Andy Annie antonio aunty belinda benjamin boris caleb david
    Demonic Denis Diogo ed edward edward2 Gene Gene2 gustave announcer Henrique Hugo iven iven2
    iven3 iven4 Jacky john kaukovalta Lee linda marcelo Marco Mario max Michael michel miguel
    Mike Mr Nguyen pablo paul pedro quincy RicishayMax RicishayMax2 RicishayMax3 rob robert
    robosoft robosoft2 robosoft3 robosoft4 robosoft5 robosoft6 robosoft7 robosoft8 steph steph2
    steph3 Storm Tweaky UniRobot zac anika anikaRobot AnxiousAndy fast f1 f2 f3 f4 f5 whisperf
    grandpa klatt klatt2 klatt3 klatt4 klatt5 klatt6 m1 m2 m3 m4 m5 m6 m7 m8 norbert sandro
    shelby travis victor whisper croak grandma""".split()
)
"""Every variant of espeak-ng 1.51 (``espeak-ng --voices=variant``), by file name."""

_FESTIVAL = {
    "ked": ("(voice_ked_diphone)", "english/ked_diphone"),
    "slt_hts": ("(voice_cmu_us_slt_arctic_hts)", "us/cmu_us_slt_arctic_hts"),
}
"""festival voice -> (the Scheme that selects it, its folder under /usr/share/festival/voices)."""
_PROGRAMS = {"flite": "flite", "espeak": "espeak-ng", "festival": "festival"}


def voice(name: str) -> Voice:
    """The voice called ``name``.

    Raises:
      ValueError: naming the voice and the known ones.
    """
    if name not in VOICES:
        raise ValueError(f"unknown voice {name!r}; voices: {', '.join(VOICES)}")
    return VOICES[name]


@dataclasses.dataclass(frozen=True)
class Reading:
    """What to say, by which voice and how."""

    text: str
    """The words, exactly as the synthesizer is given them."""
    voice: str
    """A name in :data:`VOICES`."""
    variant: str
    """An espeak-ng variant (:data:`ESPEAK_VARIANTS`), or "" for the voice as it is."""
    speed: float
    """Duration stretch: 1.0 = the voice's default rate, 1.2 = 20% slower."""
    pitch: int | None
    """In the voice's :attr:`Voice.pitch_range` units; None = its default."""


def synthesis_command(reading: Reading, out: Path) -> list[str]:
    """The flite or espeak-ng command that speaks ``reading`` into ``out``."""
    engine, name = voice(reading.voice).engine, reading.voice.split(":", 1)[1]
    if engine == "flite":
        command = ["flite", "-voice", name, "--setf", f"duration_stretch={reading.speed}"]
        if reading.pitch is not None:
            command += ["--setf", f"int_f0_target_mean={reading.pitch}"]
        return command + ["-o", str(out), "-t", reading.text]
    if engine == "espeak":
        variant = f"+{reading.variant}" if reading.variant else ""
        command = ["espeak-ng", "-v", name + variant, "-s", str(round(175 / reading.speed))]
        if reading.pitch is not None:
            command += ["-p", str(reading.pitch)]
        return command + ["-w", str(out), reading.text]
    raise ValueError(f"{reading.voice} is spoken by a festival script (festival_script)")


def festival_script(readings: list[Reading], outs: list[Path]) -> str:
    """A festival program that speaks each of ``readings`` into its ``outs`` file: one
    process for many utterances, since festival's start costs ten syntheses."""
    lines = []
    for reading, out in zip(readings, outs, strict=True):
        name = reading.voice.split(":", 1)[1]
        lines.append(_FESTIVAL[name][0])  # resets the pitch and HTS settings of the last one
        if name == "slt_hts":  # the HTS engine ignores Duration_Stretch; its "-r" is a rate
            rate = 1 / reading.speed
            lines.append(
                f'(set! hts_engine_params (cons (list "-r" {rate:.4f}) hts_engine_params))'
            )
        else:
            lines.append(f"(Parameter.set 'Duration_Stretch {reading.speed})")
        if reading.pitch is not None:
            lines.append(
                f"(set! int_lr_params (cons '(target_f0_mean {reading.pitch}) int_lr_params))"
            )
        text = reading.text.replace("\\", " ").replace('"', " ")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{out}" \'riff)')
    return "\n".join(lines) + "\n"


def synthesize(readings: list[Reading], paths: list[Path]) -> list[float]:
    """Speaks each of ``readings`` into its ``paths`` file (16 kHz mono WAV); returns their
    durations (s). The festival readings share one festival process.

    Raises:
      RuntimeError: naming the command when a synthesizer fails.
    """
    with tempfile.TemporaryDirectory(prefix="seqlab-tts-") as tmp:
        raws = [Path(tmp) / f"{i}.wav" for i in range(len(readings))]
        commands = []
        festival = [i for i, r in enumerate(readings) if voice(r.voice).engine == "festival"]
        for i, reading in enumerate(readings):
            if i not in festival:
                commands.append((synthesis_command(reading, raws[i]), [i]))
        if festival:
            script = Path(tmp) / "speak.scm"
            script.write_text(
                festival_script([readings[i] for i in festival], [raws[i] for i in festival])
            )
            commands.append((["festival", "-b", str(script)], festival))
        durations = [0.0] * len(readings)
        for command, indices in commands:
            try:
                subprocess.run(command, check=True, capture_output=True, timeout=600)
                for i in indices:
                    samples = read_audio(raws[i], SAMPLE_RATE, resample=True)
                    write_wav(paths[i], samples, SAMPLE_RATE)
                    durations[i] = len(samples) / SAMPLE_RATE
            except (
                subprocess.CalledProcessError,
                subprocess.TimeoutExpired,
                OSError,
                AudioError,
            ) as e:
                detail = (getattr(e, "stderr", b"") or b"").decode(errors="replace").strip()
                said = "; ".join(readings[i].text for i in indices)
                raise RuntimeError(
                    f"{' '.join(command)} failed: {e} {detail} (saying: {said})"
                ) from None
    return durations


def missing_packages(voice_names: list[str]) -> list[str]:
    """Debian packages of ``voice_names`` whose program is not on PATH, or (festival) whose
    voice is not installed."""
    missing = set()
    for name in voice_names:
        v = voice(name)
        if shutil.which(_PROGRAMS[v.engine]) is None:
            missing.add("festival" if v.engine == "festival" else v.package)
        if v.engine == "festival" and not _festival_voice_installed(name.split(":", 1)[1]):
            missing.add(v.package)
    return sorted(missing)


def _festival_voice_installed(name: str) -> bool:
    return Path("/usr/share/festival/voices", _FESTIVAL[name][1]).is_dir()
