"""Speech-recognition input: audio manifests, transcript tokens, batches by audio duration.

Batches are cut by padded audio duration (counted in 10 ms frames) with length bucketing, and
the training stream is the same seeded, resumable :class:`BatchStream` as for text. The
utterances of the training stream (only) are augmented as ``data.augmentation`` says
(seqlab.data.speech_augmentation), as a function of (seed, epoch, utterance). The training
manifest is checked and tokenized once into a memory-mapped utterance index
(seqlab.data.utterance_index); dev and test are read into memory. Audio is read from disk
when a batch is built; the front end that turns it into features is part of the model, so a
trained model transcribes raw audio files.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from seqlab.core.config import Config, Configurable, param
from seqlab.core.layer import lengths_to_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.data.audio_files import AudioError, pad_waveforms, read_audio
from seqlab.data.audio_manifest import (
    Manifest,
    ManifestEntry,
    ManifestError,
    check_manifest_file,
    parse_manifest_line,
    read_manifest,
)
from seqlab.data.batching import BatchStream, make_batches
from seqlab.data.mt_data import SPLITS, MissingCorpusError, default_cache_dir
from seqlab.data.sentencepiece_tokenizer import (
    PAD_ID,
    SentencePieceTokenizer,
    train_or_load_sentencepiece_from_files,
)
from seqlab.data.shard_cache import file_fingerprint
from seqlab.data.speech_augmentation import SpeechAugmentation
from seqlab.data.utterance_index import IndexSettings, UtteranceIndex, open_utterance_index

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = 100
"""Batching unit: lengths and budgets are counted in 10 ms frames."""


def frames_of(num_samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Durations in 10 ms frames (rounded up) of utterances of ``num_samples``: [N] int64."""
    per_frame = sample_rate / FRAMES_PER_SECOND
    return np.ceil(np.asarray(num_samples, dtype=np.int64) / per_frame).astype(np.int64)


Augment = Callable[[np.ndarray, int], np.ndarray]
"""(samples [N] float32, utterance index) -> augmented samples [M] float32."""


@dataclasses.dataclass
class ASRExamples:
    """A split held in memory: its manifest entries and the token ids of their transcripts."""

    entries: list[ManifestEntry]
    label_ids: list[list[int]]
    sample_rate: int
    num_skipped: int = 0
    """Manifest lines left out as broken."""
    augment: Augment | None = None
    """Applied by ``collate`` to every waveform; set by ``ASRData.train_stream`` only."""

    def __len__(self) -> int:
        return len(self.entries)

    def lengths(self) -> np.ndarray:
        """Per-utterance duration in 10 ms frames (rounded up)."""
        return frames_of(np.array([e.num_samples for e in self.entries]), self.sample_rate)


Row = TypeVar("Row")


class _IndexRows(Sequence[Row], Generic[Row]):
    """``read(keep[i])`` for i < len(keep): kept rows of an index, read when asked for."""

    def __init__(self, read: Callable[[int], Row], keep: np.ndarray) -> None:
        self.read, self.keep = read, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> Row:  # type: ignore[override]
        return self.read(int(self.keep[i]))


class IndexedUtterances:
    """The training utterances of an utterance index as ``collate`` reads them: the first
    ``limit`` (0 = all), those of at most ``max_samples``.

    Only the kept indices and their lengths are in memory; entries and labels are read from
    the index (and the manifest line it points to) when a batch needs them.
    """

    def __init__(
        self, index: UtteranceIndex, sample_rate: int, limit: int, max_samples: float
    ) -> None:
        self.index = index
        n = min(limit, len(index)) if limit > 0 else len(index)
        self.keep = np.flatnonzero(index.num_samples[:n] <= max_samples)
        self._lengths = frames_of(index.num_samples[self.keep], sample_rate)
        self.entries = _IndexRows(index.entry, self.keep)
        self.label_ids = _IndexRows(index.label_ids, self.keep)
        self.sample_rate = sample_rate
        self.num_skipped = index.num_skipped
        self.augment: Augment | None = None
        """Applied by ``collate`` to every waveform; set by ``ASRData.train_stream`` only."""

    def __len__(self) -> int:
        return len(self.keep)

    def lengths(self) -> np.ndarray:
        """Per-utterance duration in 10 ms frames (rounded up)."""
        return self._lengths

    def identity(self) -> dict[str, Any]:
        """What identifies these utterances: the index, its manifest and tokenizer."""
        return self.index.identity()


class ASRData(Configurable):
    """Audio with transcripts from a built-in speech corpus or the user's JSONL manifests."""

    @dataclasses.dataclass
    class Config(Config):
        corpus: str = param(
            "flite_bible", doc="Built-in speech corpus whose splits are used where a path is empty."
        )
        cache_dir: str = param("", doc="Where corpora and tokenizers are cached; empty = default.")
        train_path: str = param("", doc="Training manifest (JSONL: audio, text[, id]).")
        dev_path: str = param("", doc="Dev manifest; empty = the corpus's dev split.")
        dev2_path: str = param(
            "",
            doc="Second dev manifest (dataset dev2; flite_bible: dev verses read by a held-out "
            "voice); empty = the corpus's dev2 split, if it has one.",
        )
        test_path: str = param("", doc="Test manifest; empty = the corpus's test split.")
        sample_rate: int = param(16000, doc="Sample rate the model hears (Hz).", at_least=1)
        resample: bool = param(True, doc="Resample audio at other rates (else it is bad input).")
        bad_input: Literal["skip", "refuse"] = param(
            "skip", doc="A broken manifest line (or audio file) is skipped and counted, or refused."
        )
        verify_audio: bool = param(
            True, doc="Decode every file once when reading a manifest (finds corrupt audio)."
        )
        normalize_transcripts: bool = param(
            True, doc="Lowercase and strip punctuation before tokenizing (as WER scoring does)."
        )
        tokenizer: SentencePieceTokenizer.Config = param(
            SentencePieceTokenizer.Config(model_type="char", vocab_size=32),
            doc="Transcript tokens: model_type=char for graphemes, unigram/bpe for pieces.",
        )
        max_batch_seconds: float = param(
            240.0, doc="Padded audio seconds per training batch (batch size x longest).", above=0
        )
        eval_max_batch_seconds: float = param(
            480.0, doc="Padded audio seconds per eval batch.", above=0
        )
        max_duration_seconds: float = param(
            20.0, doc="Training utterances longer than this are dropped.", above=0
        )
        train_limit: int = param(
            0, doc="Use only the first N training utterances (0 = all).", at_least=0
        )
        eval_limit: int = param(
            0, doc="Use only the first N dev/test utterances (0 = all).", at_least=0
        )
        num_workers: int = param(
            0,
            doc="Processes that check and tokenize the training manifest (0 = one per core).",
            at_least=0,
        )
        augmentation: SpeechAugmentation.Config = param(
            SpeechAugmentation.Config(),
            doc="Speed, gain, noise and dither applied to training utterances (all off by "
            "default); eval, decode and infer hear the audio as it is.",
        )

    config: Config

    def __init__(self, config: Config) -> None:
        self.config = config
        self.augmentation = config.augmentation.build()
        self.cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        self._paths: dict[str, Path] | None = None
        self._manifests: dict[str, Manifest] = {}
        self.tokenizer: SentencePieceTokenizer | None = None
        self.tokenizer_path: Path | None = None

    # ---- files ----------------------------------------------------------------------------
    def paths(self, prepare: bool = True) -> dict[str, Path]:
        """The train/dev/test manifests, and dev2 where it is set or the corpus has it,
        preparing the built-in corpus where a path is empty."""
        if self._paths is None:
            given = {s: getattr(self.config, f"{s}_path") for s in SPLITS}
            corpus: dict[str, Path] = {}
            if not all(given.values()):
                if not self.config.corpus:
                    missing = ", ".join(f"data.{s}_path" for s in SPLITS if not given[s])
                    raise MissingCorpusError(f"no corpus set: set data.corpus or {missing}")
                from seqlab.data.corpora.catalog import corpus_files

                corpus = corpus_files(self.config.corpus, self.cache_dir, prepare=prepare)
            self._paths = {s: Path(given[s]) if given[s] else corpus[s] for s in SPLITS}
            if self.config.dev2_path or "dev2" in corpus:
                self._paths["dev2"] = Path(self.config.dev2_path or corpus["dev2"])
        return self._paths

    def manifest(self, split: str) -> Manifest:
        """The checked manifest of ``split`` (read once; broken lines per ``bad_input``)."""
        if split not in self._manifests:
            c = self.config
            manifest = read_manifest(
                self.paths()[split], c.sample_rate, c.resample, c.bad_input, c.verify_audio
            )
            report_skipped(split, manifest.num_skipped, manifest.problems)
            self._manifests[split] = manifest
        return self._manifests[split]

    def index_settings(self) -> IndexSettings:
        c = self.config
        return IndexSettings(
            c.sample_rate, c.resample, c.bad_input, c.verify_audio, c.normalize_transcripts
        )

    # ---- tokenizer ------------------------------------------------------------------------
    def load_tokenizer(self, model_path: Path | None = None) -> SentencePieceTokenizer:
        """Loads ``model_path`` if given, else trains (or reuses) one on the transcripts of
        the training manifest's lines (their audio is not read: that is checked when the
        training index is built)."""
        if model_path is not None and model_path.exists():
            self.tokenizer = SentencePieceTokenizer.load(self.config.tokenizer, model_path)
            self.tokenizer_path = model_path
            return self.tokenizer
        train = check_manifest_file(self.paths()["train"], self.config.bad_input)
        fingerprint = file_fingerprint(train, self.cache_dir / "shards")
        settings = self.index_settings()
        key = f"transcripts:{fingerprint['sha256']}:{settings.normalize_transcripts}"

        def write_transcripts(directory: Path) -> list[Path]:
            out = directory / "transcripts.txt"
            with train.open("rb") as f, out.open("w") as texts:
                for line_no, raw in enumerate(f, start=1):
                    try:
                        fields = parse_manifest_line(raw, line_no, train)
                    except ManifestError:
                        continue  # refused, or counted and reported, by the index build
                    if fields is not None:
                        texts.write(settings.label_text(fields[2]).replace("\n", " ") + "\n")
            return [out]

        self.tokenizer, self.tokenizer_path = train_or_load_sentencepiece_from_files(
            self.config.tokenizer, key, write_transcripts, self.cache_dir / "tokenizers"
        )
        return self.tokenizer

    # ---- examples and batches -------------------------------------------------------------
    def examples(self, split: str) -> ASRExamples | IndexedUtterances:
        """Utterances of ``split`` with token ids; over-long training utterances are dropped.

        The training split is read from its memory-mapped utterance index (built on first
        use); dev and test are read and tokenized in memory.
        """
        if self.tokenizer is None or self.tokenizer_path is None:
            raise RuntimeError("call load_tokenizer() first")
        c = self.config
        if split == "train":
            index = open_utterance_index(
                self.paths()["train"],
                self.tokenizer_path,
                self.cache_dir,
                self.index_settings(),
                c.num_workers,
            )
            report_skipped(split, index.num_skipped, index.problems)
            max_samples = c.max_duration_seconds * c.sample_rate
            return IndexedUtterances(index, c.sample_rate, c.train_limit, max_samples)
        manifest = self.manifest(split)
        entries = manifest.entries[: c.eval_limit] if c.eval_limit > 0 else manifest.entries
        settings = self.index_settings()
        labels = self.tokenizer.encode_batch([settings.label_text(e.text) for e in entries])
        return ASRExamples(entries, labels, c.sample_rate, manifest.num_skipped)

    def train_stream(self, examples: ASRExamples | IndexedUtterances, seed: int) -> BatchStream:
        """The seeded, resumable stream of training batches over ``examples``; from now on
        ``collate`` augments ``examples`` (if ``data.augmentation`` does anything).

        An utterance's augmentation depends on (``seed``, the stream's epoch when the batch
        is collated, its index) only, so a stream restored from a saved position collates
        the same augmented audio as one that never stopped. Batches are planned on the
        unperturbed durations: speed 0.9 makes a batch up to 11% longer than its budget.
        """
        budget = int(self.config.max_batch_seconds * FRAMES_PER_SECOND)
        stream = BatchStream(examples.lengths(), budget, seed)
        augmentation = self.augmentation
        if augmentation.enabled:
            # The epoch is read when collating, right after next(stream) gave the batch.
            examples.augment = lambda samples, utterance: augmentation(
                samples, seed, stream.epoch, utterance
            )
        return stream

    def eval_batches(self, examples: ASRExamples | IndexedUtterances) -> list[list[int]]:
        """Deterministic, length-sorted batches covering every example once."""
        budget = int(self.config.eval_max_batch_seconds * FRAMES_PER_SECOND)
        return make_batches(examples.lengths(), budget, seed=0, epoch=0, shuffle=False)

    def collate(self, examples: ASRExamples | IndexedUtterances, indices: list[int]) -> NestedMap:
        """Reads the chosen utterances' audio, augments it if ``examples`` are a training
        stream's, and pads everything into a batch.

        Returns:
          NestedMap with audio [B, N] (float32 samples), audio_paddings [B, N], tgt_ids
          [B, L] (transcript tokens, padded with PAD_ID), tgt_paddings [B, L] (1.0 = pad),
          tgt_text (the manifest transcripts), ids (utterance ids), indices, and num_tokens
          (10 ms frames plus transcript tokens, for throughput logging).

        Raises:
          ManifestError: naming the manifest line whose audio cannot be read any more.
        """
        waveforms = []
        entries = [examples.entries[i] for i in indices]
        for index, entry in zip(indices, entries, strict=True):
            try:
                samples = read_audio(entry.audio, examples.sample_rate, self.config.resample)
            except AudioError as e:
                raise ManifestError(f"{entry.where}: {e}") from None
            waveforms.append(
                samples if examples.augment is None else examples.augment(samples, index)
            )
        return batch_from_waveforms(
            waveforms,
            [examples.label_ids[i] for i in indices],
            texts=[entry.text for entry in entries],
            ids=[entry.id for entry in entries],
            indices=list(indices),
            sample_rate=examples.sample_rate,
        )


def report_skipped(split: str, num_skipped: int, problems: list[str]) -> None:
    """Prints how many broken manifest lines ``split`` skipped, and the first messages."""
    if not num_skipped:
        return
    shown = "\n  ".join(problems[:5])
    more = num_skipped - min(5, len(problems))
    tqdm.write(
        f"[seqlab] {split}: skipped {num_skipped} broken manifest lines "
        f"(data.bad_input=skip):\n  {shown}" + (f"\n  ... and {more} more" if more > 0 else "")
    )


def batch_from_waveforms(
    waveforms: list[np.ndarray],
    label_ids: list[list[int]],
    texts: list[str],
    ids: list[str],
    indices: list[int],
    sample_rate: int,
) -> NestedMap:
    """Pads mono waveforms and label ids into the batch described in ``ASRData.collate``."""
    audio, audio_paddings = pad_waveforms(waveforms)
    label_lengths = torch.tensor([len(x) for x in label_ids])
    max_labels = max(1, int(label_lengths.max()))
    tgt_ids = torch.full((len(label_ids), max_labels), PAD_ID, dtype=torch.long)
    for row, labels in enumerate(label_ids):
        tgt_ids[row, : len(labels)] = torch.tensor(labels, dtype=torch.long)
    frames = float(sum(len(w) for w in waveforms)) * FRAMES_PER_SECOND / sample_rate
    return NestedMap(
        audio=audio,
        audio_paddings=audio_paddings,
        tgt_ids=tgt_ids,
        tgt_paddings=lengths_to_paddings(label_lengths, max_labels),
        tgt_text=list(texts),
        ids=list(ids),
        indices=indices,
        num_tokens=frames + float(label_lengths.sum()),
    )
