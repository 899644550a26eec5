"""A speech training manifest, checked and tokenized once: the memory-mapped utterance index.

An index is a directory ``<cache>/shards/<manifest stem>-<key>/`` (built and found as in
seqlab.data.shard_cache) holding, for each usable utterance in manifest order,

- ``num_samples.npy``: [N] samples at the reader's rate, the one array held in memory
  (batching reads it);
- ``line_offsets.npy``: [N] int64 byte offset of its manifest line, from which a batch reads
  the audio path, the transcript and the id;
- ``line_numbers.npy``: [N] its manifest line, for messages naming ``manifest:line``;
- ``labels.bin``, ``labels_lengths.npy``, ``labels_sizes.npy``: the token ids of its
  (normalized) transcript, a varint column;
- ``manifest.json``: the format version, the manifest's fingerprint, the tokenizer's sha256,
  the reader's settings, the number of utterances, and the skipped lines with the first
  messages about them.

The key hashes the format version, the manifest's content hash, the tokenizer's, and every
setting that changes the index, so a later start checks the manifest's fingerprint and
neither decodes audio nor tokenizes. Building checks each line as ``read_manifest`` does
(with ``verify_audio``, decoding every file) in worker processes, a chunk of lines at a time.
An audio file rewritten after the build, under an unchanged manifest, is not noticed: a
batch reads it as it is, with the length the index recorded for batching.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from seqlab.data.audio_manifest import (
    BadInputPolicy,
    LineChecker,
    ManifestEntry,
    ManifestError,
    check_manifest_file,
    parse_manifest_line,
)
from seqlab.data.shard_cache import (
    EncodedIds,
    IdsColumn,
    IdsColumnWriter,
    building,
    data_identity,
    encode_ids,
    find_or_build,
    load_manifest,
    load_worker_tokenizer,
    map_in_order,
    save_array,
    worker_tokenizer,
    write_manifest,
)
from seqlab.data.token_shards import iter_line_chunks
from seqlab.data.transcripts import normalize_transcript

FORMAT_VERSION = 1
_CHUNK_LINES = 1_000
_PROBLEMS_KEPT = 100
"""Messages about skipped lines kept in the manifest (all are counted)."""


@dataclasses.dataclass(frozen=True)
class IndexSettings:
    """The reader's settings that change an index (seqlab.data.asr_data.ASRData.Config)."""

    sample_rate: int
    resample: bool
    bad_input: BadInputPolicy
    verify_audio: bool
    normalize_transcripts: bool

    def label_text(self, transcript: str) -> str:
        """The text whose tokens are an utterance's labels."""
        return normalize_transcript(transcript) if self.normalize_transcripts else transcript


_ChunkIndex = tuple[np.ndarray, np.ndarray, np.ndarray, EncodedIds, list[str]]


def _index_chunk(task: tuple[Path, IndexSettings, int, int, list[bytes]]) -> _ChunkIndex:
    """Checks and tokenizes one chunk of manifest lines.

    Returns:
      (line offsets, line numbers and samples of its usable utterances, their encoded
      labels, the messages about its skipped lines).
    """
    path, settings, first_line, first_offset, lines = task
    checker = LineChecker(
        path, settings.sample_rate, settings.resample, settings.bad_input, settings.verify_audio
    )
    starts = first_offset + np.cumsum([0] + [len(raw) for raw in lines[:-1]], dtype=np.int64)
    kept: list[int] = []
    num_samples: list[int] = []
    texts: list[str] = []
    problems: list[str] = []
    for k, raw in enumerate(lines):
        entry = checker.check(raw, first_line + k, problems)
        if entry is not None:
            kept.append(k)
            num_samples.append(entry.num_samples)
            texts.append(settings.label_text(entry.text))
    labels = encode_ids(worker_tokenizer().encode(texts))
    rows = np.asarray(kept, dtype=np.int64)
    return starts[rows], first_line + rows, np.asarray(num_samples, np.int64), labels, problems


def build_utterance_index(
    manifest_path: Path,
    tokenizer_path: Path,
    directory: Path,
    manifest: dict[str, Any],
    settings: IndexSettings,
    workers: int,
) -> None:
    """Checks and tokenizes every line of ``manifest_path`` into a new index at ``directory``.

    Raises:
      ManifestError: naming ``manifest:line`` of the first broken line with
        ``bad_input="refuse"`` (nothing is left behind).
    """

    def tasks() -> Any:
        offset = 0
        for first, lines in iter_line_chunks(manifest_path, _CHUNK_LINES):
            yield manifest_path, settings, first, offset, lines
            offset += sum(map(len, lines))

    arrays: dict[str, list[np.ndarray]] = {"line_offsets": [], "line_numbers": [], "samples": []}
    problems: list[str] = []
    skipped = 0
    with building(directory) as tmp:
        labels = IdsColumnWriter(tmp, "labels")
        try:
            for offsets, numbers, samples, encoded, chunk_problems in map_in_order(
                _index_chunk, tasks(), workers, load_worker_tokenizer, (str(tokenizer_path),)
            ):
                for name, value in zip(arrays, (offsets, numbers, samples), strict=True):
                    arrays[name].append(value)
                labels.append(encoded)
                problems += chunk_problems[: _PROBLEMS_KEPT - len(problems)]
                skipped += len(chunk_problems)
        finally:
            count = labels.close()
        save_array(tmp / "line_offsets.npy", arrays["line_offsets"], np.int64)
        save_array(tmp / "line_numbers.npy", arrays["line_numbers"])
        save_array(tmp / "num_samples.npy", arrays["samples"], np.int64)
        manifest = {
            **manifest,
            "num_utterances": count,
            "skipped_lines": skipped,
            "problems": problems,
        }
        write_manifest(tmp, manifest)


class UtteranceIndex:
    """An utterance index, memory-mapped: utterance i's manifest entry and label ids, and
    every utterance's number of samples in memory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.manifest = load_manifest(directory)
        self.manifest_path = Path(self.manifest["source"]["path"])
        self.num_samples: np.ndarray = np.load(directory / "num_samples.npy")
        """[N] int64 samples of each utterance at the reader's rate."""
        self._line_offsets = np.load(directory / "line_offsets.npy", mmap_mode="r")
        self._line_numbers = np.load(directory / "line_numbers.npy", mmap_mode="r")
        self._labels = IdsColumn(directory, "labels")
        self._manifest_bytes: mmap.mmap | None = None

    def __len__(self) -> int:
        return int(self.manifest["num_utterances"])

    @property
    def num_skipped(self) -> int:
        """Manifest lines left out as broken."""
        return int(self.manifest["skipped_lines"])

    @property
    def problems(self) -> list[str]:
        """Messages about the first skipped lines."""
        return list(self.manifest["problems"])

    def label_ids(self, index: int) -> list[int]:
        """Token ids of utterance ``index``'s transcript (no BOS or EOS)."""
        return self._labels.ids(index).tolist()

    def entry(self, index: int) -> ManifestEntry:
        """Utterance ``index`` as the manifest reader gives it, from its manifest line.

        Raises:
          ManifestError: the manifest changed since the index was built (a new start
            builds a new index), or its line no longer parses.
        """
        where = f"{self.manifest_path}:{int(self._line_numbers[index])}"
        if self._manifest_bytes is None:
            with self.manifest_path.open("rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            if len(data) != self.manifest["source"]["size"]:
                raise ManifestError(
                    f"{self.manifest_path} changed since its index {self.directory} was "
                    f"built; start again to index it anew"
                )
            self._manifest_bytes = data
        data = self._manifest_bytes
        start = int(self._line_offsets[index])
        end = data.find(b"\n", start)
        line = data[start : end if end >= 0 else len(data)]
        fields = parse_manifest_line(line, int(self._line_numbers[index]), self.manifest_path)
        if fields is None:
            raise ManifestError(f"{where}: blank, but indexed as an utterance (edited manifest?)")
        return ManifestEntry(fields[0], fields[1], int(self.num_samples[index]), fields[2], where)

    def identity(self) -> dict[str, Any]:
        """What a logdir records of the index it trains on."""
        return data_identity(self.directory, self.manifest)


def open_utterance_index(
    manifest_path: Path,
    tokenizer_path: Path,
    cache_dir: Path,
    settings: IndexSettings,
    workers: int = 0,
) -> UtteranceIndex:
    """The index of ``manifest_path`` with labels from ``tokenizer_path``: found by its key,
    or built (by ``workers`` processes; 0 = one per core)."""
    manifest_path = check_manifest_file(manifest_path, settings.bad_input)

    def build(directory: Path, manifest: dict[str, Any]) -> None:
        build_utterance_index(
            manifest_path,
            tokenizer_path,
            directory,
            manifest,
            settings,
            workers or os.cpu_count() or 1,
        )

    reader = dataclasses.asdict(settings)
    return UtteranceIndex(
        find_or_build(manifest_path, tokenizer_path, cache_dir, FORMAT_VERSION, build, reader)
    )
