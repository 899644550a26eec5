"""Parallel-text input for MT: resolves the corpus files, tokenizes, and builds batches."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqlab.core.config import Config, ConfigError, Configurable, param
from seqlab.core.file_hash import sha256_of
from seqlab.core.layer import lengths_to_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.data.batching import BatchStream, make_batches
from seqlab.data.sentencepiece_tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SentencePieceTokenizer,
)
from seqlab.data.shard_cache import file_fingerprint
from seqlab.data.streamed_pairs import (
    PairStream,
    StreamedPairs,
    resolve_stream_files,
    streaming_identity,
)
from seqlab.data.text_pairs import check_data_file, read_text_pairs
from seqlab.data.token_shards import (
    PAIRS,
    EmptyTexts,
    TokenShards,
    open_pair_shards,
    train_tokenizer_on_sample,
)

SPLITS = ("train", "dev", "test")


def default_cache_dir() -> Path:
    """``$SEQLAB_CACHE`` or ``~/.cache/seqlab``."""
    return Path(os.environ.get("SEQLAB_CACHE", Path.home() / ".cache" / "seqlab"))


class MissingCorpusError(FileNotFoundError):
    """The data files are not there; the message says which command prepares them."""


@dataclasses.dataclass
class MTExamples:
    """A tokenized split: source/target ids (with EOS) and the raw texts."""

    source_ids: list[list[int]]
    target_ids: list[list[int]]
    source_text: list[str]
    target_text: list[str]

    def __len__(self) -> int:
        return len(self.source_ids)

    def lengths(self) -> list[int]:
        """Per-example max(source, target) length in tokens, including BOS/EOS."""
        return [
            max(len(s), len(t) + 1) for s, t in zip(self.source_ids, self.target_ids, strict=True)
        ]


class _IdsView:
    """Pair ``keep[i]``'s ids on one side of a shard set, as a list (EOS appended if asked)."""

    def __init__(self, shards: TokenShards, side: str, keep: np.ndarray, eos: bool) -> None:
        self.shards, self.side, self.keep, self.eos = shards, side, keep, eos

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> list[int]:
        ids = self.shards.ids(self.side, int(self.keep[i])).tolist()
        return ids + [EOS_ID] if self.eos else ids


class ShardedPairs:
    """The training pairs of a shard set, as ``collate`` reads them: the first ``limit``
    (0 = all), each side shorter than ``max_length`` tokens, sides swapped if ``reverse``.

    Only the kept indices and their lengths are in memory; the ids are read from the map.
    """

    def __init__(self, shards: TokenShards, reverse: bool, max_length: int, limit: int) -> None:
        self.shards = shards
        n = min(limit, len(shards)) if limit > 0 else len(shards)
        source, target = ("tgt", "src") if reverse else ("src", "tgt")
        src_lengths = shards.lengths[source][:n]
        tgt_lengths = shards.lengths[target][:n]
        keep = np.nonzero((src_lengths < max_length) & (tgt_lengths < max_length))[0]
        self.keep = keep.astype(np.int64)
        # Source with EOS; target with BOS in and EOS out.
        self._lengths = np.maximum(src_lengths[keep] + 1, tgt_lengths[keep] + 1).astype(np.int64)
        self.source_ids = _IdsView(shards, source, self.keep, eos=True)
        self.target_ids = _IdsView(shards, target, self.keep, eos=False)
        self.source_text = self.target_text = EmptyTexts(len(self.keep))
        self.num_too_long = n - len(self.keep)
        # Blank lines the reader skipped, reported with the run's metrics.
        self.num_skipped = int(shards.manifest.get("blank_lines", 0))

    def __len__(self) -> int:
        return len(self.keep)

    def lengths(self) -> np.ndarray:
        """Per-example max(source + EOS, target + 1) in tokens."""
        return self._lengths

    def identity(self) -> dict[str, Any]:
        """What identifies these pairs: the shard set, its source file and tokenizer."""
        return self.shards.identity()


class MTData(Configurable):
    """Parallel text from a built-in corpus or the user's own TSV/JSONL files."""

    @dataclasses.dataclass
    class Config(Config):
        corpus: str = param(
            "bible_en_es", doc="Built-in corpus whose splits are used where a path is empty."
        )
        cache_dir: str = param("", doc="Where corpora and tokenizers are cached; empty = default.")
        train_path: str = param("", doc="Training pairs (.tsv: source TAB target, or .jsonl).")
        dev_path: str = param("", doc="Dev pairs; empty = the corpus's dev split.")
        test_path: str = param("", doc="Test pairs; empty = the corpus's test split.")
        reverse: bool = param(
            False, doc="Translate target -> source (e.g. es -> en from bible_en_es); same split."
        )
        tokenizer: SentencePieceTokenizer.Config = param(
            SentencePieceTokenizer.Config(), doc="Shared source/target SentencePiece model."
        )
        max_tokens: int = param(
            4096, doc="Padded tokens per training batch (per side).", at_least=1
        )
        eval_max_tokens: int = param(8192, doc="Padded tokens per eval/decode batch.", at_least=1)
        max_length: int = param(
            200, doc="Training pairs longer than this (tokens) are dropped.", at_least=1
        )
        train_limit: int = param(
            0, doc="Use only the first N training pairs (0 = all).", at_least=0
        )
        eval_limit: int = param(0, doc="Use only the first N dev/test pairs (0 = all).", at_least=0)
        num_workers: int = param(
            0,
            doc="Processes that tokenize the training file into shards (0 = one per core).",
            at_least=0,
        )
        streaming: bool = param(
            False,
            doc="Read the training pairs from the files as training goes, a window at a time, "
            "instead of tokenizing them into shards first; train_path may then be a directory "
            "or a glob pattern of several files.",
        )
        stream_window: int = param(
            100_000,
            doc="Streaming: pairs shuffled and bucketed by length together (the memory taken "
            "grows with it, not with the corpus).",
            at_least=1,
        )

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        self._paths: dict[str, Path] | None = None
        self.tokenizer: SentencePieceTokenizer | None = None
        self.tokenizer_path: Path | None = None

    # ---- files ----------------------------------------------------------------------------
    def paths(self, prepare: bool = True) -> dict[str, Path]:
        """The train/dev/test files, preparing the built-in corpus if needed."""
        if self._paths is not None:
            return self._paths
        explicit = {
            "train": self.config.train_path,
            "dev": self.config.dev_path,
            "test": self.config.test_path,
        }
        paths: dict[str, Path] = {k: Path(v) for k, v in explicit.items() if v}
        if len(paths) < len(SPLITS):
            if not self.config.corpus:
                missing = [k for k in SPLITS if k not in paths]
                raise MissingCorpusError(
                    f"no corpus set and no path for {missing}: set data.corpus or "
                    + ", ".join(f"data.{k}_path" for k in missing)
                )
            from seqlab.data.corpora.catalog import corpus_files

            corpus = corpus_files(self.config.corpus, self.cache_dir, prepare=prepare)
            for split in SPLITS:
                paths.setdefault(split, corpus[split])
        self._paths = paths
        return paths

    # ---- tokenizer ------------------------------------------------------------------------
    def load_tokenizer(self, model_path: Path | None = None) -> SentencePieceTokenizer:
        """Loads ``model_path`` if given, else trains (or reuses) one on the training pairs."""
        if model_path is not None and model_path.exists():
            self.tokenizer = SentencePieceTokenizer.load(self.config.tokenizer, model_path)
            self.tokenizer_path = model_path
            return self.tokenizer
        # Sources, then targets, at most max_training_sentences of them in all.
        self.tokenizer, self.tokenizer_path = train_tokenizer_on_sample(
            self.config.tokenizer,
            self.train_files(),
            self.train_fingerprints(),
            PAIRS,
            self.config.train_limit,
            self.cache_dir / "tokenizers",
        )
        return self.tokenizer

    def train_files(self) -> list[Path]:
        """The training files: ``train_path`` (or the corpus's), which in streaming mode may
        be a directory or a glob pattern."""
        train = self.paths()["train"]
        if self.config.streaming:
            return resolve_stream_files(str(train))
        return [check_data_file(train)]

    def train_fingerprints(self) -> list[dict[str, Any]]:
        """Path, size, mtime and content hash of each training file (hashed once, cached)."""
        return [file_fingerprint(f, self.cache_dir / "shards") for f in self.train_files()]

    def tokenizer_texts(self) -> list[str]:
        """The texts a tokenizer trains on: every training source, then every target.

        Always in the files' direction, so that ``reverse`` reuses the same (joint) model.
        """
        pairs = self._read("train")
        return [s for s, _ in pairs] + [t for _, t in pairs]

    # ---- examples -------------------------------------------------------------------------
    def _read(self, split: str) -> list[tuple[str, str]]:
        pairs = read_text_pairs(self.paths()[split])
        limit = self.config.train_limit if split == "train" else self.config.eval_limit
        return pairs[:limit] if limit > 0 else pairs

    def examples(self, split: str) -> MTExamples | ShardedPairs:
        """Tokenized pairs of ``split``; training pairs over ``max_length`` are dropped.

        The training split is read from its memory-mapped shard set (built on first use),
        without its raw text; dev and test are tokenized in memory with their text.
        """
        if self.tokenizer is None or self.tokenizer_path is None:
            raise RuntimeError("call load_tokenizer() first")
        if split == "train" and self.config.streaming:
            if self.config.train_limit > 0:
                raise ConfigError(
                    "data.train_limit is not supported with data.streaming; use a shorter file"
                )
            return StreamedPairs(
                self.train_files(),
                self.tokenizer,
                self.config.reverse,
                self.config.max_length,
                identity=streaming_identity(
                    self.train_fingerprints(), sha256_of(self.tokenizer_path)
                ),
            )
        if split == "train":
            shards = open_pair_shards(
                self.paths()["train"],
                self.tokenizer_path,
                self.cache_dir,
                workers=self.config.num_workers,
            )
            return ShardedPairs(
                shards, self.config.reverse, self.config.max_length, self.config.train_limit
            )
        pairs = self._read(split)
        if self.config.reverse:
            pairs = [(t, s) for s, t in pairs]
        src = self.tokenizer.encode_batch([s for s, _ in pairs])
        tgt = self.tokenizer.encode_batch([t for _, t in pairs])
        keep = range(len(pairs))
        if split == "train":
            limit = self.config.max_length
            keep = [i for i in keep if len(src[i]) < limit and len(tgt[i]) < limit]
        return MTExamples(
            source_ids=[src[i] + [EOS_ID] for i in keep],
            target_ids=[tgt[i] for i in keep],
            source_text=[pairs[i][0] for i in keep],
            target_text=[pairs[i][1] for i in keep],
        )

    def train_stream(
        self, examples: MTExamples | ShardedPairs | StreamedPairs, seed: int
    ) -> BatchStream | PairStream:
        if isinstance(examples, StreamedPairs):
            return PairStream(examples, self.config.stream_window, self.config.max_tokens, seed)
        return BatchStream(examples.lengths(), self.config.max_tokens, seed)

    def eval_batches(self, examples: MTExamples) -> list[list[int]]:
        """Deterministic, length-sorted batches covering every example once."""
        return make_batches(
            examples.lengths(), self.config.eval_max_tokens, seed=0, epoch=0, shuffle=False
        )


def collate(examples: MTExamples | ShardedPairs, indices: list[int]) -> NestedMap:
    """Pads the chosen examples into a batch.

    Returns:
      NestedMap with src_ids [B, S], src_paddings [B, S], tgt_in_ids [B, T] (BOS + target),
      tgt_out_ids [B, T] (target + EOS), tgt_paddings [B, T] (float, 1.0 = pad), and the
      raw ``src_text`` / ``tgt_text`` lists and ``indices``.
    """
    src = [examples.source_ids[i] for i in indices]
    tgt = [examples.target_ids[i] for i in indices]
    s_len = max(len(x) for x in src)
    t_len = max(len(x) for x in tgt) + 1
    b = len(indices)
    src_ids = torch.full((b, s_len), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((b, t_len), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((b, t_len), PAD_ID, dtype=torch.long)
    for row, (s, t) in enumerate(zip(src, tgt, strict=True)):
        src_ids[row, : len(s)] = torch.tensor(s)
        tgt_in[row, : len(t) + 1] = torch.tensor([BOS_ID] + t)
        tgt_out[row, : len(t) + 1] = torch.tensor(t + [EOS_ID])
    src_lengths = torch.tensor([len(s) for s in src])
    tgt_lengths = torch.tensor([len(t) + 1 for t in tgt])
    return NestedMap(
        src_ids=src_ids,
        src_paddings=lengths_to_paddings(src_lengths, s_len),
        tgt_in_ids=tgt_in,
        tgt_out_ids=tgt_out,
        tgt_paddings=lengths_to_paddings(tgt_lengths, t_len),
        src_text=[examples.source_text[i] for i in indices],
        tgt_text=[examples.target_text[i] for i in indices],
        indices=list(indices),
    )


# Batches are built by the data object so that runners stay task-agnostic.
MTData.collate = staticmethod(collate)  # type: ignore[attr-defined]
