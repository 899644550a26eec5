"""Language-model input: lines of text, a SentencePiece tokenizer, packed training rows.

Text comes as plain text (one sentence, paragraph or document a line), JSONL (``{"text":
...}`` a line) or Parquet (a string column ``text``), chosen by the file's suffix. The
training text is tokenized once into memory-mapped shards (seqlab.data.token_shards), from
which training reads the ids; only the tokens per line, the line of each sequence and the
rows are resident, and no raw text. Every line becomes one sequence ``BOS w1 ... wn`` predicting
``w1 ... wn EOS``. Training sequences longer than ``row_length`` are cut into chunks (a chunk
after the first starts from the token before it instead of BOS), and then packed, several to
a row of at most ``row_length`` tokens (:mod:`seqlab.data.sequence_packing`). The packing
depends only on the data and ``row_length``; the seeded, resumable :class:`BatchStream`
shuffles the packed rows into batches of ``max_tokens``. Dev and test lines (small, held in
memory) are never cut or packed: each is a row of its own, so that decoding can prompt with
its first words.

Word counts for per-word perplexity are the whitespace-separated words of each line, plus
one for its end of sentence (the convention of word-level benchmarks such as Penn Treebank and
WikiText, where ``<eos>`` is a token of the text); the shard set keeps each line's words.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqlab.core.config import Config, ConfigError, Configurable, param
from seqlab.core.nested_map import NestedMap
from seqlab.data.batching import BatchStream, make_batches
from seqlab.data.mt_data import SPLITS, MissingCorpusError, default_cache_dir
from seqlab.data.sentencepiece_tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SentencePieceTokenizer,
)
from seqlab.data.sequence_packing import pack_sequences, segment_layout
from seqlab.data.shard_cache import file_fingerprint
from seqlab.data.text_lines import count_words, read_text_lines
from seqlab.data.text_pairs import check_data_file
from seqlab.data.token_shards import (
    LINES,
    EmptyTexts,
    TokenShards,
    open_token_shards,
    train_tokenizer_on_sample,
)

PROMPTS = "prompts"
"""Dataset name of ``data.prompt_path``: whole lines used as decoding prompts."""


@dataclasses.dataclass
class LMExamples:
    """Lines tokenized in memory (dev, test, prompts): sequences, their lines, and the rows
    they form (the training split is :class:`ShardedLines`, read as ``collate`` reads this).

    ``rows[r]`` lists the sequences laid out in row r; for dev and test, one per row.
    """

    input_ids: list[list[int]]
    target_ids: list[list[int]]
    line_of: list[int]
    """Per sequence, the index of its line in ``texts``."""
    num_words: list[int]
    """Per sequence: words of its line plus one EOS, counted at the line's first chunk."""
    texts: list[str]
    prompt_texts: list[str]
    """Per line: what decoding is prompted with (none for the training split)."""
    reference_texts: list[str]
    """Per line: the true continuation of the prompt (empty for a prompt file; none for the
    training split)."""
    rows: list[list[int]]

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> list[int]:
        """Tokens per row."""
        return [sum(len(self.input_ids[s]) for s in row) for row in self.rows]

    def sequence_ids(self, sequence: int) -> tuple[list[int], list[int]]:
        """(input ids, target ids) of one sequence."""
        return self.input_ids[sequence], self.target_ids[sequence]

    def sequence_words(self, sequence: int) -> int:
        """Words plus EOS of the sequence's line if the sequence begins it, else 0."""
        return self.num_words[sequence]


class _PackedRows:
    """Row r's sequence indices, from the flat layout of every row: ``sequences`` [S] (row
    after row) and ``starts`` [R + 1] (where each row begins in it)."""

    def __init__(self, sequences: np.ndarray, starts: np.ndarray) -> None:
        self.sequences, self.starts = sequences, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, row: int) -> list[int]:
        return self.sequences[self.starts[row] : self.starts[row + 1]].tolist()


class ShardedLines:
    """The training lines of a shard set, as ``collate`` reads them: the first ``limit`` lines
    (0 = all), cut into sequences of at most ``row_length`` targets and packed into rows.

    Resident: the tokens per line, the line of each sequence, and the rows (each sequence's
    place in them); the ids and words per line are read from the map, and no text is kept.
    The sequences and rows are those in-memory tokenization makes from the same lines.
    """

    def __init__(self, shards: TokenShards, row_length: int, limit: int) -> None:
        self.shards = shards
        self.row_length = row_length
        n = min(limit, len(shards)) if limit > 0 else len(shards)
        num_targets = shards.lengths["text"][:n].astype(np.int64) + 1  # tokens + EOS
        chunks = -(-num_targets // row_length)
        # first_sequence[i]: the index of line i's first sequence ([n + 1]).
        self.first_sequence = np.concatenate(([0], np.cumsum(chunks)))
        total = int(self.first_sequence[-1])
        index_type = np.int32 if max(total, n) < 2**31 else np.int64
        self.line_of = np.repeat(np.arange(n, dtype=index_type), chunks)
        starts = (np.arange(total) - self.first_sequence[self.line_of]) * row_length
        sequence_lengths = np.minimum(row_length, num_targets[self.line_of] - starts)
        rows = pack_sequences(sequence_lengths.tolist(), row_length)
        row_starts = np.cumsum([0] + [len(row) for row in rows], dtype=np.int64)
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=index_type, count=total)
        self.rows = _PackedRows(flat, row_starts)
        self._lengths = (
            np.add.reduceat(sequence_lengths[flat], row_starts[:-1]) if total else np.zeros(0)
        ).astype(np.int64)
        self.texts = EmptyTexts(n)
        self.prompt_texts: list[str] = []  # trained on, never decoded
        self.reference_texts: list[str] = []
        # Blank lines the reader skipped, reported with the run's metrics.
        self.num_skipped = int(shards.manifest.get("blank_lines", 0))

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> np.ndarray:
        """Tokens per row."""
        return self._lengths

    def sequence_ids(self, sequence: int) -> tuple[list[int], list[int]]:
        """(input ids, target ids) of one sequence: its part of BOS + line + EOS."""
        line = int(self.line_of[sequence])
        # Sliced before conversion to lists: a long line's chunks each convert only theirs.
        full = np.concatenate(([BOS_ID], self.shards.ids("text", line), [EOS_ID]))
        start = (sequence - int(self.first_sequence[line])) * self.row_length
        end = min(start + self.row_length, len(full) - 1)
        return full[start:end].tolist(), full[start + 1 : end + 1].tolist()

    def sequence_words(self, sequence: int) -> int:
        """Words plus EOS of the sequence's line if the sequence begins it, else 0."""
        line = int(self.line_of[sequence])
        if sequence != self.first_sequence[line]:
            return 0
        return int(self.shards.counts["words"][line]) + 1

    def identity(self) -> dict[str, Any]:
        """What identifies these lines: the shard set, its source file and tokenizer."""
        return self.shards.identity()


class LMData(Configurable):
    """Monolingual text from a built-in corpus or the user's own plain-text files."""

    @dataclasses.dataclass
    class Config(Config):
        corpus: str = param(
            "bible_en", doc="Built-in corpus whose splits are used where a path is empty."
        )
        cache_dir: str = param("", doc="Where corpora and tokenizers are cached; empty = default.")
        train_path: str = param(
            "",
            doc="Training text: UTF-8, one sentence or paragraph a line, or .jsonl "
            "({\"text\": ...} a line), or .parquet (a string column 'text').",
        )
        dev_path: str = param("", doc="Dev text (same formats); empty = the corpus's dev split.")
        test_path: str = param("", doc="Test text; empty = the corpus's test split.")
        prompt_path: str = param(
            "", doc="Prompts, one a line, decoded as dataset 'prompts' (seqlab decode)."
        )
        tokenizer: SentencePieceTokenizer.Config = param(
            SentencePieceTokenizer.Config(), doc="SentencePiece model trained on the train text."
        )
        row_length: int = param(
            256, doc="Tokens per packed training row; longer lines are cut.", at_least=1
        )
        max_tokens: int = param(
            8192, doc="Padded tokens per training batch (rows x length).", at_least=1
        )
        eval_max_tokens: int = param(8192, doc="Padded tokens per eval/decode batch.", at_least=1)
        prompt_words: int = param(
            5, doc="Dev/test decoding prompts: the first N words of each line.", at_least=0
        )
        train_limit: int = param(
            0, doc="Use only the first N training lines (0 = all).", at_least=0
        )
        eval_limit: int = param(0, doc="Use only the first N dev/test lines (0 = all).", at_least=0)
        num_workers: int = param(
            0,
            doc="Processes that tokenize the training text into shards (0 = one per core).",
            at_least=0,
        )

    config: Config

    def __init__(self, config: Config) -> None:
        if config.row_length < 2:
            raise ConfigError(f"data.row_length must be >= 2, got {config.row_length}")
        if config.max_tokens < config.row_length:
            raise ConfigError(
                f"data.max_tokens ({config.max_tokens}) must hold at least one row of "
                f"data.row_length ({config.row_length}) tokens"
            )
        self.config = config
        self.cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        self._paths: dict[str, Path] | None = None
        self.tokenizer: SentencePieceTokenizer | None = None
        self.tokenizer_path: Path | None = None

    # ---- files ----------------------------------------------------------------------------
    def paths(self, prepare: bool = True) -> dict[str, Path]:
        """The train/dev/test (and prompts) files, preparing the corpus where a path is empty."""
        if self._paths is None:
            c = self.config
            given = {"train": c.train_path, "dev": c.dev_path, "test": c.test_path}
            paths = {split: Path(path) for split, path in given.items() if path}
            if len(paths) < len(SPLITS):
                if not c.corpus:
                    missing = ", ".join(f"data.{s}_path" for s in SPLITS if s not in paths)
                    raise MissingCorpusError(f"no corpus set: set data.corpus or {missing}")
                from seqlab.data.corpora.catalog import corpus_files

                corpus = corpus_files(c.corpus, self.cache_dir, prepare=prepare)
                paths = {split: paths.get(split, corpus[split]) for split in SPLITS}
            if c.prompt_path:
                paths[PROMPTS] = Path(c.prompt_path)
            self._paths = paths
        return self._paths

    def _lines(self, split: str) -> list[str]:
        """The texts of a dev, test or prompts file (the training text is read as shards)."""
        paths = self.paths()
        if split not in paths:
            hint = " (set data.prompt_path)" if split == PROMPTS else ""
            raise MissingCorpusError(
                f"no dataset '{split}'{hint}; datasets: {', '.join(sorted(paths))}"
            )
        lines = read_text_lines(paths[split])
        limit = self.config.eval_limit
        return lines[:limit] if limit > 0 and split != PROMPTS else lines

    # ---- tokenizer ------------------------------------------------------------------------
    def load_tokenizer(self, model_path: Path | None = None) -> SentencePieceTokenizer:
        """Loads ``model_path`` if given, else trains (or reuses) one on the training text."""
        if model_path is not None and model_path.exists():
            self.tokenizer = SentencePieceTokenizer.load(self.config.tokenizer, model_path)
            self.tokenizer_path = model_path
        else:
            train = check_data_file(self.paths()["train"])
            self.tokenizer, self.tokenizer_path = train_tokenizer_on_sample(
                self.config.tokenizer,
                [train],
                [file_fingerprint(train, self.cache_dir / "shards")],
                LINES,
                self.config.train_limit,
                self.cache_dir / "tokenizers",
            )
        return self.tokenizer

    # ---- examples -------------------------------------------------------------------------
    def examples(self, split: str) -> LMExamples | ShardedLines:
        """Tokenized lines of ``split``: packed rows for train, one line a row otherwise.

        The training split is read from its memory-mapped shard set (built on first use),
        without its text; dev, test and prompts are tokenized in memory with their text.
        """
        if split == "train":
            if self.tokenizer_path is None:
                raise RuntimeError("call load_tokenizer() first")
            shards = open_token_shards(
                self.paths()["train"],
                LINES,
                self.tokenizer_path,
                self.cache_dir,
                workers=self.config.num_workers,
            )
            return ShardedLines(shards, self.config.row_length, self.config.train_limit)
        lines = self._lines(split)
        if split == PROMPTS:
            return self.examples_from_texts(lines)
        n = self.config.prompt_words
        words = [line.split() for line in lines]
        prompts = [" ".join(w[:n]) for w in words]
        references = [" ".join(w[n:]) for w in words]
        return self._tokenize(lines, prompts, references)

    def examples_from_texts(self, prompts: list[str]) -> LMExamples:
        """Examples whose whole texts are decoding prompts (a prompt file, ``seqlab infer``)."""
        return self._tokenize(prompts, prompts, ["" for _ in prompts])

    def _tokenize(self, lines: list[str], prompts: list[str], references: list[str]) -> LMExamples:
        """Lines (dev, test, prompts) tokenized in memory, each a sequence and a row."""
        if self.tokenizer is None:
            raise RuntimeError("call load_tokenizer() first")
        ids = self.tokenizer.encode_batch(lines)
        return LMExamples(
            input_ids=[[BOS_ID, *line] for line in ids],
            target_ids=[[*line, EOS_ID] for line in ids],
            line_of=list(range(len(lines))),
            num_words=[count_words(line) + 1 for line in lines],
            texts=lines,
            prompt_texts=prompts,
            reference_texts=references,
            rows=[[i] for i in range(len(lines))],
        )

    # ---- batches --------------------------------------------------------------------------
    def train_stream(self, examples: LMExamples | ShardedLines, seed: int) -> BatchStream:
        return BatchStream(examples.lengths(), self.config.max_tokens, seed)

    def eval_batches(self, examples: LMExamples) -> list[list[int]]:
        """Deterministic, length-sorted batches covering every row once."""
        return make_batches(
            examples.lengths(), self.config.eval_max_tokens, seed=0, epoch=0, shuffle=False
        )

    @staticmethod
    def collate(examples: LMExamples | ShardedLines, indices: list[int]) -> NestedMap:
        """Lays out the chosen rows into a packed batch.

        Returns:
          NestedMap with ids [B, T] (inputs: BOS + tokens per segment), labels [B, T] (tokens +
          EOS), paddings [B, T] (float, 1.0 = pad), segment_ids [B, T] (0 = pad, else 1, 2, ...
          per row), segment_positions [B, T] (restarting at 0 in every segment), num_tokens and
          num_words (floats: real target tokens; words plus EOS of the lines begun here), and per
          row, from its first segment's line: ``texts``, ``prompt_texts``, ``reference_texts``;
          and ``indices``.
        """
        rows = [examples.rows[i] for i in indices]
        sequences = [[examples.sequence_ids(s) for s in row] for row in rows]
        segment_lengths = [[len(inputs) for inputs, _ in row] for row in sequences]
        length = max(sum(x) for x in segment_lengths)
        segment_ids, positions = segment_layout(segment_lengths, length)
        ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        labels = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        for r, row in enumerate(sequences):
            row_inputs = [t for inputs, _ in row for t in inputs]
            row_targets = [t for _, targets in row for t in targets]
            ids[r, : len(row_inputs)] = torch.tensor(row_inputs)
            labels[r, : len(row_targets)] = torch.tensor(row_targets)
        first_lines = [int(examples.line_of[row[0]]) for row in rows]
        return NestedMap(
            ids=ids,
            labels=labels,
            paddings=(segment_ids == 0).float(),
            segment_ids=segment_ids,
            segment_positions=positions,
            num_tokens=float((segment_ids > 0).sum()),
            num_words=float(sum(examples.sequence_words(s) for row in rows for s in row)),
            texts=[examples.texts[i] for i in first_lines],
            prompt_texts=[
                examples.prompt_texts[i] if examples.prompt_texts else "" for i in first_lines
            ],
            reference_texts=[
                examples.reference_texts[i] if examples.reference_texts else "" for i in first_lines
            ],
            indices=list(indices),
        )
