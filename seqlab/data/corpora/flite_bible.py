"""``flite_bible``: synthetic English speech from short KJV verses (DATA.md, "Speech").

Short verses of the King James Bible (5-15 words) are read aloud by every English voice Debian
packages for flite, espeak-ng and festival (:mod:`seqlab.data.corpora.tts_voices`), at random
rates and pitches. Every file is 16 kHz mono 16-bit WAV (other rates are resampled). The splits:

- ``train``: training verses, read by the training voices (a verse may be read by several);
- ``dev``: held-out verses, read by the training voices;
- ``dev2``: the dev verses again, read by a held-out voice (``festival:ked``), so that the
  gap between ``dev`` and ``dev2`` is the unseen-speaker gap, and ``dev2`` predicts ``test``;
- ``test``: other held-out verses, read by another held-out voice (``flite:rms``), so the
  test set measures both unseen text and an unseen speaker.

No training or dev utterance is read by a speaker of ``dev2`` or ``test``. Files in the output
directory: ``{train,dev,dev2,test}.jsonl`` manifests (``id``, ``audio`` relative to the
manifest, ``duration`` in seconds, ``text``, plus ``voice``, ``speaker``, ``accent``,
``variant``, ``speed`` and ``pitch``), ``audio/<split>/*.wav`` and ``meta.json`` (the request,
the voices with their accents and pitch ranges, and per-split counts by voice). A finished
directory for the same request is reused; an interrupted run keeps its finished files (each
named by a hash of what it says and how) and synthesizes only the rest, in a pool of worker
processes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import random
from pathlib import Path

from tqdm.auto import tqdm

from seqlab.data.audio_files import audio_duration
from seqlab.data.corpora.bible import prepare_bible_monolingual
from seqlab.data.corpora.tts_voices import (
    ESPEAK_VARIANTS,
    SAMPLE_RATE,
    VOICES,
    Reading,
    Voice,
    missing_packages,
    synthesize,
    voice,
)
from seqlab.data.transcripts import spoken_form

FORMAT_VERSION = 3
"""Bumped whenever the prepared files change, so that old caches are rebuilt."""

SPLITS = ("train", "dev", "dev2", "test")
TEXT_SPLITS = ("train", "dev", "test")
"""The splits of the prepared Bible text that the verses are drawn from (and split anew)."""
BIBLE_MODULE = "engKJV2006eb"
CHUNK_SIZE = 32
"""Utterances a worker synthesizes at a time."""
SPEED_RANGE = (0.9, 1.15)
"""Duration stretch drawn for every utterance (1.0 = the voice's default rate)."""

DEV2_VOICE = "festival:ked"
"""Held out for ``dev2``: an unseen male US speaker, like the test voice."""
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
    num_dev2: int = 300
    """Second dev utterances: the first ``num_dev2`` dev verses, read by ``dev2_voice``."""
    num_test: int = 300
    """Test utterances, one per held-out verse, all by ``test_voice``."""
    min_words: int = 5
    """Shortest verse (words after normalization)."""
    max_words: int = 15
    """Longest verse."""
    espeak_fraction: float = 0.3
    """Share of train/dev utterances read by espeak-ng (any English accent and variant)."""
    festival_fraction: float = 0.05
    """Share of train/dev utterances read by festival; flite reads the rest."""
    dev2_voice: str = DEV2_VOICE
    """The voice of ``dev2``, held out from train and dev."""
    test_voice: str = TEST_VOICE
    """The voice of ``test``, held out from train, dev and dev2."""
    seed: int = 1234
    """Seed of the verse split and of the voice, rate and pitch draws."""


@dataclasses.dataclass(frozen=True)
class Utterance(Reading):
    """One planned recording: a reading (its ``text`` is the transcript) of a split."""

    id: str
    split: str

    @property
    def file_name(self) -> str:
        key = f"{self.text}|{self.voice}|{self.variant}|{self.speed}|{self.pitch}".encode()
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


def training_voices(request: FliteBibleRequest) -> dict[str, list[Voice]]:
    """The voices of train and dev by engine: every voice whose speaker is not the speaker of
    ``dev2_voice`` or ``test_voice``.

    Raises:
      ValueError: for an unknown held-out voice, a shared one, shares that are not shares,
        or an engine with a share of the utterances and no voice left.
    """
    held_out = [voice(request.dev2_voice), voice(request.test_voice)]
    if held_out[0].speaker == held_out[1].speaker:
        raise ValueError(
            f"flite_bible: dev2_voice {request.dev2_voice} and test_voice "
            f"{request.test_voice} are the same speaker; hold out two speakers"
        )
    by_engine: dict[str, list[Voice]] = {"flite": [], "espeak": [], "festival": []}
    for v in VOICES.values():
        if v.speaker not in {h.speaker for h in held_out}:
            by_engine[v.engine].append(v)
    shares = {"espeak": request.espeak_fraction, "festival": request.festival_fraction}
    shares["flite"] = 1.0 - sum(shares.values())
    if min(shares.values()) < 0:
        raise ValueError(
            f"flite_bible: espeak_fraction {request.espeak_fraction} and festival_fraction "
            f"{request.festival_fraction} must be at least 0 and add up to at most 1"
        )
    for engine, share in shares.items():
        if share > 0 and not by_engine[engine]:
            raise ValueError(f"flite_bible: {engine} reads {share:.0%} but has no voice left")
    return by_engine


def plan_utterances(verses: list[str], request: FliteBibleRequest) -> list[Utterance]:
    """Assigns verses to splits and voices; depends only on ``verses`` and ``request``.

    The verse split is the same as in earlier versions (``dev`` and ``test`` verses are
    unchanged); every split draws voices, rates and pitches from its own random stream.

    Raises:
      ValueError: when there are not enough verses for the held-out splits, or from
        :func:`training_voices`.
    """
    order = list(verses)
    random.Random(request.seed).shuffle(order)
    held_out = request.num_dev + request.num_test
    if len(order) <= held_out:
        raise ValueError(
            f"flite_bible: {len(order)} verses of {request.min_words}-{request.max_words} "
            f"words, but num_dev + num_test = {held_out} must leave some for training"
        )
    if request.num_dev2 > request.num_dev:
        raise ValueError(
            f"flite_bible: num_dev2 = {request.num_dev2} reads dev verses, but num_dev = "
            f"{request.num_dev}"
        )
    by_engine = training_voices(request)
    dev_verses = order[: request.num_dev]
    train_verses = order[held_out:]
    texts = {
        "train": [train_verses[i % len(train_verses)] for i in range(request.num_train)],
        "dev": dev_verses,
        "dev2": dev_verses[: request.num_dev2],
        "test": order[request.num_dev : held_out],
    }
    plan = []
    for split in SPLITS:
        rng = random.Random(f"{request.seed}:{split}")
        for index, text in enumerate(texts[split]):
            held = {"dev2": request.dev2_voice, "test": request.test_voice}.get(split)
            v = voice(held) if held else _draw_voice(rng, by_engine, request)
            variant = rng.choice(("",) + ESPEAK_VARIANTS) if v.engine == "espeak" else ""
            speed = round(rng.uniform(*SPEED_RANGE), 2)
            pitch = rng.randint(*v.pitch_range) if v.pitch_range else None
            plan.append(
                Utterance(text, v.name, variant, speed, pitch, f"{split}-{index:06d}", split)
            )
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
    lines = [ln for s in TEXT_SPLITS for ln in bible[s].read_text(encoding="utf-8").splitlines()]
    return plan_utterances(select_verses(lines, request.min_words, request.max_words), request)


def _draw_voice(
    rng: random.Random, by_engine: dict[str, list[Voice]], request: FliteBibleRequest
) -> Voice:
    """An engine by its share, then a speaker of it, then one of that speaker's voices (so
    flite's ``kal`` and ``kal16`` together weigh as much as ``awb``)."""
    draw = rng.random()
    if draw < request.espeak_fraction:
        engine = "espeak"
    elif draw < request.espeak_fraction + request.festival_fraction:
        engine = "festival"
    else:
        engine = "flite"
    by_speaker = collections.defaultdict(list)
    for v in by_engine[engine]:
        by_speaker[v.speaker].append(v)
    return rng.choice(by_speaker[rng.choice(sorted(by_speaker))])


def _synthesize_chunk(chunk: list[tuple[Utterance, str]]) -> list[tuple[str, float]]:
    """Synthesizes a chunk of (utterance, path) jobs; returns (id, duration) pairs."""
    durations = synthesize([u for u, _ in chunk], [Path(path) for _, path in chunk])
    return [(u.id, d) for (u, _), d in zip(chunk, durations, strict=True)]


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
      Paths by name: ``"train"``, ``"dev"``, ``"dev2"``, ``"test"`` (JSONL manifests) and
      ``"meta"``.

    Raises:
      FileNotFoundError: a synthesizer or voice is not installed (names the packages).
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
    missing = missing_packages(sorted({u.voice for u in plan}))
    if missing:
        raise FileNotFoundError(
            f"flite_bible needs {', '.join(missing)}: run "
            f"'apt-get install {' '.join(missing)}' (as root) or scripts/setup.sh"
        )
    durations = _synthesize_all(plan, out_dir, num_workers, show_progress)
    _remove_stale_audio(out_dir, {u.file_name for u in plan})

    counts: dict[str, dict[str, object]] = {}
    by_split = {split: [u for u in plan if u.split == split] for split in SPLITS}
    for split, rows in by_split.items():
        text = "".join(
            json.dumps(_manifest_row(u, durations[u.id]), ensure_ascii=False) + "\n" for u in rows
        )
        _write_text(paths[split], text)
        counts[split] = {
            "utterances": len(rows),
            "hours": round(sum(durations[u.id] for u in rows) / 3600, 3),
            "variants": len({u.variant for u in rows if u.variant}),
            "voices": dict(sorted(collections.Counter(u.voice for u in rows).items())),
        }
    used = sorted({u.voice for u in plan})
    meta = {
        "request": wanted,
        "sample_rate": SAMPLE_RATE,
        "splits": counts,
        "voices": {
            name: {
                "speaker": VOICES[name].speaker,
                "accent": VOICES[name].accent,
                "package": VOICES[name].package,
                "pitch_range": VOICES[name].pitch_range,
                "splits": [s for s in SPLITS if any(u.voice == name for u in by_split[s])],
            }
            for name in used
        },
        "speed_range": SPEED_RANGE,
        "espeak_variants": list(ESPEAK_VARIANTS),
        "train_voices": sorted({u.voice for u in plan if u.split == "train"}),
        "dev2_voice": request.dev2_voice,
        "test_voice": request.test_voice,
        "text": f"{BIBLE_MODULE} (King James Version), verses of "
        f"{request.min_words}-{request.max_words} words",
    }
    _write_text(paths["meta"], json.dumps(meta, indent=2) + "\n")
    return paths


def _manifest_row(u: Utterance, duration: float) -> dict[str, object]:
    """The manifest line of ``u``: what every manifest has, and how it was read."""
    v = VOICES[u.voice]
    return {
        "id": u.id,
        "audio": f"audio/{u.split}/{u.file_name}",
        "duration": round(duration, 4),
        "text": u.text,
        "voice": u.voice,
        "speaker": v.speaker,
        "accent": v.accent,
        "variant": u.variant,
        "speed": u.speed,
        "pitch": u.pitch,
    }


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
    # festival's utterances go in chunks of their own, each chunk one festival process.
    jobs.sort(key=lambda job: VOICES[job[0].voice].engine == "festival")
    chunks = [jobs[i : i + CHUNK_SIZE] for i in range(0, len(jobs), CHUNK_SIZE)]
    with bar, concurrent.futures.ProcessPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for done in pool.map(_synthesize_chunk, chunks):
            durations.update(done)
            bar.update(len(done))
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
