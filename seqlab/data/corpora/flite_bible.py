"""``flite_bible``: synthetic English speech from short KJV verses (DATA.md, "Speech").

Short verses of the King James Bible (5-15 words) are read aloud by Debian's ``flite`` voices
and, for variety, by ``espeak-ng`` accents and variants at random rates and pitches. Every
file is 16 kHz mono 16-bit WAV (8 kHz and 22.05 kHz voices are resampled). The splits:

- ``train``: training verses, read by the training voices (a verse may be read by several);
- ``dev``: held-out verses, read by the training voices;
- ``test``: other held-out verses, read by a held-out voice (``flite:rms`` by default), so
  the test set measures both unseen text and an unseen speaker.

Files in the output directory: ``{train,dev,test}.jsonl`` manifests (``id``, ``audio`` relative
to the manifest, ``duration`` in seconds, ``text``, plus ``voice``), ``audio/<split>/*.wav`` and
``meta.json``. A finished directory for the same request is reused; an interrupted run keeps
its finished files (each named by a hash of what it says and who says it) and synthesizes only
the rest, in a pool of worker processes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from seqlab.data.audio_files import audio_duration, read_audio, write_wav
from seqlab.data.corpora.bible import prepare_bible_monolingual
from seqlab.data.transcripts import spoken_form

FORMAT_VERSION = 2
"""Bumped whenever the prepared files change, so that old caches are rebuilt."""

SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test")
BIBLE_MODULE = "engKJV2006eb"

FLITE_TRAIN_VOICES = ("flite:kal", "flite:kal16", "flite:awb", "flite:slt")
"""flite voices of train and dev (``kal`` speaks at 8 kHz and is resampled)."""
ESPEAK_TRAIN_VOICES = (
    "espeak:en-us",
    "espeak:en-gb",
    "espeak:en-gb-scotland",
    "espeak:en-gb-x-rp",
    "espeak:en-029",
)
"""espeak-ng English accents of train and dev; each utterance adds a random variant."""
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4")
TEST_VOICE = "flite:rms"
"""Held out: no training or dev utterance uses it. A male US voice, like ``kal``: holding out
``slt``, flite's only female voice, measured mostly the missing voice (WER near 100)."""


@dataclasses.dataclass(frozen=True)
class FliteBibleRequest:
    """What to synthesize; a prepared directory is reused only for the same request."""

    num_train: int = 8000
    """Training utterances (verses are reused with other voices when there are fewer)."""
    num_dev: int = 300
    """Dev utterances, one per held-out verse."""
    num_test: int = 300
    """Test utterances, one per held-out verse, all by ``test_voice``."""
    min_words: int = 5
    """Shortest verse (words after normalization)."""
    max_words: int = 15
    """Longest verse."""
    espeak_fraction: float = 0.25
    """Share of train/dev utterances read by espeak-ng rather than flite."""
    test_voice: str = TEST_VOICE
    """The held-out voice."""
    seed: int = 1234
    """Seed of the verse split and of the voice, rate and pitch draws."""


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One planned recording."""

    id: str
    split: str
    text: str
    """Transcript: the normalized words, exactly what the synthesizer is given."""
    voice: str
    """``flite:<voice>`` or ``espeak:<voice>+<variant>``."""
    speed: float
    """flite duration stretch, or espeak-ng rate factor (1.0 = the voice's default)."""
    pitch: int
    """espeak-ng pitch (0-99); unused by flite."""

    @property
    def file_name(self) -> str:
        key = f"{self.text}|{self.voice}|{self.speed}|{self.pitch}".encode()
        return f"{self.id}-{hashlib.sha256(key).hexdigest()[:10]}.wav"


def select_verses(lines: list[str], min_words: int, max_words: int) -> list[str]:
    """Distinct spoken forms of the lines with ``min_words..max_words`` words, in order."""
    seen: set[str] = set()
    out = []
    for line in lines:
        text = spoken_form(line)
        if min_words <= len(text.split()) <= max_words and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def plan_utterances(verses: list[str], request: FliteBibleRequest) -> list[Utterance]:
    """Assigns verses to splits and voices; depends only on ``verses`` and ``request``.

    Raises:
      ValueError: when there are not enough verses for the held-out splits.
    """
    rng = random.Random(request.seed)
    order = list(verses)
    rng.shuffle(order)
    held_out = request.num_dev + request.num_test
    if len(order) <= held_out:
        raise ValueError(
            f"flite_bible: {len(order)} verses of {request.min_words}-{request.max_words} "
            f"words, but num_dev + num_test = {held_out} must leave some for training"
        )
    dev_verses = order[: request.num_dev]
    test_verses = order[request.num_dev : held_out]
    train_verses = order[held_out:]
    train_texts = [train_verses[i % len(train_verses)] for i in range(request.num_train)]
    plan = []
    for split, texts in (("train", train_texts), ("dev", dev_verses), ("test", test_verses)):
        for index, text in enumerate(texts):
            if split == "test":
                voice = request.test_voice
            elif rng.random() < request.espeak_fraction:
                variant = rng.choice(ESPEAK_VARIANTS)
                voice = f"{rng.choice(ESPEAK_TRAIN_VOICES)}+{variant}"
            else:
                voice = rng.choice(FLITE_TRAIN_VOICES)
            speed = round(rng.uniform(0.9, 1.15), 2)
            pitch = rng.randrange(30, 71)
            plan.append(Utterance(f"{split}-{index:06d}", split, text, voice, speed, pitch))
    return plan


def prepared_for(paths: dict[str, Path], request: dict[str, object]) -> bool:
    """Whether every file of ``paths`` exists and ``paths["meta"]`` records ``request``."""
    if not all(p.is_file() for p in paths.values()):
        return False
    try:
        return json.loads(paths["meta"].read_text(encoding="utf-8")).get("request") == request
    except (OSError, json.JSONDecodeError):
        return False


def plan_from_bible(bible: dict[str, Path], request: FliteBibleRequest) -> list[Utterance]:
    """The plan of the corpus made from the prepared KJV text files ``bible`` (by split)."""
    lines = [ln for s in SPLITS for ln in bible[s].read_text(encoding="utf-8").splitlines()]
    return plan_utterances(select_verses(lines, request.min_words, request.max_words), request)


def synthesize(utterance: Utterance, path: Path) -> float:
    """Synthesizes ``utterance`` into ``path`` (16 kHz mono WAV); returns its duration (s).

    Raises:
      RuntimeError: naming the command when the synthesizer fails.
    """
    engine, voice = utterance.voice.split(":", 1)
    with tempfile.TemporaryDirectory(prefix="seqlab-tts-") as tmp:
        raw = Path(tmp) / "raw.wav"
        if engine == "flite":
            command = ["flite", "-voice", voice, "--setf", f"duration_stretch={utterance.speed}"]
            command += ["-t", utterance.text, "-o", str(raw)]
        elif engine == "espeak":
            rate = round(175 / utterance.speed)
            command = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(utterance.pitch)]
            command += ["-w", str(raw), utterance.text]
        else:
            raise ValueError(f"unknown synthesizer {engine!r} in voice {utterance.voice!r}")
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            detail = getattr(e, "stderr", b"") or b""
            raise RuntimeError(
                f"synthesizing {utterance.id} failed: {' '.join(command)}: {e} "
                f"{detail.decode(errors='replace').strip()}"
            ) from None
        samples = read_audio(raw, SAMPLE_RATE, resample=True)
    write_wav(path, samples, SAMPLE_RATE)
    return len(samples) / SAMPLE_RATE


def _synthesize_job(job: tuple[Utterance, str]) -> tuple[str, float]:
    utterance, path = job
    return utterance.id, synthesize(utterance, Path(path))


def missing_synthesizers(voices: list[str]) -> list[str]:
    """Programs the ``voices`` need that are not on PATH."""
    programs = {"flite": "flite", "espeak": "espeak-ng"}
    needed = {programs.get(v.split(":", 1)[0], v) for v in voices}
    return sorted(p for p in needed if shutil.which(p) is None)


def prepare_flite_bible(
    out_dir: Path,
    request: FliteBibleRequest | None = None,
    num_workers: int = 2,
    show_progress: bool = True,
) -> dict[str, Path]:
    """Writes (or reuses) the ``flite_bible`` corpus in ``out_dir``.

    Args:
      out_dir: Output directory; the KJV text is prepared in ``out_dir/../bible_en``.
      request: Sizes, voices and seed; defaults to :class:`FliteBibleRequest`.
      num_workers: Synthesis processes.
      show_progress: Show a progress bar.

    Returns:
      Paths by name: ``"train"``, ``"dev"``, ``"test"`` (JSONL manifests) and ``"meta"``.

    Raises:
      FileNotFoundError: ``flite`` or ``espeak-ng`` is not installed (names the package).
    """
    request = request or FliteBibleRequest()
    out_dir = Path(out_dir)
    paths = {split: out_dir / f"{split}.jsonl" for split in SPLITS}
    paths["meta"] = out_dir / "meta.json"
    wanted = {"format_version": FORMAT_VERSION, **dataclasses.asdict(request)}
    if prepared_for(paths, wanted):
        return paths

    bible = prepare_bible_monolingual(BIBLE_MODULE, out_dir.parent / "bible_en")
    plan = plan_from_bible(bible, request)
    missing = missing_synthesizers(sorted({u.voice for u in plan}))
    if missing:
        raise FileNotFoundError(
            f"flite_bible needs {', '.join(missing)}: run "
            f"'apt-get install {' '.join(missing)}' (as root) or scripts/setup.sh"
        )
    durations = _synthesize_all(plan, out_dir, num_workers, show_progress)
    _remove_stale_audio(out_dir, {u.file_name for u in plan})

    counts: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        rows = [u for u in plan if u.split == split]
        text = "".join(
            json.dumps(
                {
                    "id": u.id,
                    "audio": f"audio/{split}/{u.file_name}",
                    "duration": round(durations[u.id], 4),
                    "text": u.text,
                    "voice": u.voice,
                },
                ensure_ascii=False,
            )
            + "\n"
            for u in rows
        )
        _write_text(paths[split], text)
        counts[split] = {
            "utterances": len(rows),
            "hours": round(sum(durations[u.id] for u in rows) / 3600, 3),
            "voices": len({u.voice for u in rows}),
        }
    meta = {
        "request": wanted,
        "sample_rate": SAMPLE_RATE,
        "splits": counts,
        "train_voices": sorted({u.voice for u in plan if u.split == "train"}),
        "test_voice": request.test_voice,
        "text": f"{BIBLE_MODULE} (King James Version), verses of "
        f"{request.min_words}-{request.max_words} words",
    }
    _write_text(paths["meta"], json.dumps(meta, indent=2) + "\n")
    return paths


def _synthesize_all(
    plan: list[Utterance], out_dir: Path, num_workers: int, show_progress: bool
) -> dict[str, float]:
    """Synthesizes the utterances whose files are missing; returns every duration."""
    durations: dict[str, float] = {}
    jobs = []
    for split in SPLITS:
        (out_dir / "audio" / split).mkdir(parents=True, exist_ok=True)
    for utterance in plan:
        path = out_dir / "audio" / utterance.split / utterance.file_name
        if path.is_file():
            durations[utterance.id] = audio_duration(path)
        else:
            jobs.append((utterance, str(path)))
    bar = tqdm(
        total=len(plan),
        initial=len(plan) - len(jobs),
        desc="synthesize flite_bible",
        unit="utt",
        disable=not show_progress,
    )
    with bar, concurrent.futures.ProcessPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for utterance_id, duration in pool.map(_synthesize_job, jobs, chunksize=16):
            durations[utterance_id] = duration
            bar.update(1)
    return durations


def _remove_stale_audio(out_dir: Path, keep: set[str]) -> None:
    """Deletes audio files of an earlier, different request."""
    for path in (out_dir / "audio").glob("*/*.wav"):
        if path.name not in keep:
            path.unlink()


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
