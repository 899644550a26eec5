"""Language-model input: plain-text lines, a SentencePiece tokenizer, packed training rows.

Every line (a sentence or a paragraph) becomes one sequence ``BOS w1 ... wn`` predicting
``w1 ... wn EOS``. Training sequences longer than ``row_length`` are cut into chunks (a chunk
after the first starts from the token before it instead of BOS), and then packed, several to
a row of at most ``row_length`` tokens (:mod:`seqlab.data.sequence_packing`). The packing
depends only on the data and ``row_length``; the seeded, resumable :class:`BatchStream`
shuffles the packed rows into batches of ``max_tokens``. Dev and test lines are never cut or
packed: each is a row of its own, so that decoding can prompt with its first words.

Word counts for per-word perplexity are the whitespace-separated words of each line, plus
one for its end of sentence (the convention of word-level benchmarks such as Penn Treebank and
WikiText, where ``<eos>`` is a token of the text).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

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
    train_or_load_sentencepiece,
)
from seqlab.data.sequence_packing import pack_sequences, segment_layout
from seqlab.data.text_lines import read_text_lines

PROMPTS = "prompts"
"""Dataset name of ``data.prompt_path``: whole lines used as decoding prompts."""


@dataclasses.dataclass
class LMExamples:
    """A tokenized split: sequences (chunks of lines), their lines, and the rows they form.

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


class LMData(Configurable):
    """Monolingual text from a built-in corpus or the user's own plain-text files."""

    @dataclasses.dataclass
    class Config(Config):
        corpus: str = param(
            "bible_en", doc="Built-in corpus whose splits are used where a path is empty."
        )
        cache_dir: str = param("", doc="Where corpora and tokenizers are cached; empty = default.")
        train_path: str = param("", doc="Training text, UTF-8, one sentence or paragraph a line.")
        dev_path: str = param("", doc="Dev text; empty = the corpus's dev split.")
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
        paths = self.paths()
        if split not in paths:
            hint = " (set data.prompt_path)" if split == PROMPTS else ""
            raise MissingCorpusError(
                f"no dataset '{split}'{hint}; datasets: {', '.join(sorted(paths))}"
            )
        lines = read_text_lines(paths[split])
        limit = self.config.train_limit if split == "train" else self.config.eval_limit
        return lines[:limit] if limit > 0 and split != PROMPTS else lines

    # ---- tokenizer ------------------------------------------------------------------------
    def load_tokenizer(self, model_path: Path | None = None) -> SentencePieceTokenizer:
        """Loads ``model_path`` if given, else trains (or reuses) one on the training text."""
        if model_path is not None and model_path.exists():
            self.tokenizer = SentencePieceTokenizer.load(self.config.tokenizer, model_path)
            self.tokenizer_path = model_path
        else:
            self.tokenizer, self.tokenizer_path = train_or_load_sentencepiece(
                self.config.tokenizer, self._lines("train"), self.cache_dir / "tokenizers"
            )
        return self.tokenizer

    # ---- examples -------------------------------------------------------------------------
    def examples(self, split: str) -> LMExamples:
        """Tokenized lines of ``split``: packed rows for train, one line a row otherwise."""
        lines = self._lines(split)
        if split == PROMPTS:
            return self.examples_from_texts(lines)
        if split == "train":  # trained on, never decoded: no prompts or references
            return self._tokenize(lines, [], [], pack=True)
        n = self.config.prompt_words
        words = [line.split() for line in lines]
        prompts = [" ".join(w[:n]) for w in words]
        references = [" ".join(w[n:]) for w in words]
        return self._tokenize(lines, prompts, references, pack=False)

    def examples_from_texts(self, prompts: list[str]) -> LMExamples:
        """Examples whose whole texts are decoding prompts (a prompt file, ``seqlab infer``)."""
        return self._tokenize(prompts, prompts, ["" for _ in prompts], pack=False)

    def _tokenize(
        self, lines: list[str], prompts: list[str], references: list[str], pack: bool
    ) -> LMExamples:
        if self.tokenizer is None:
            raise RuntimeError("call load_tokenizer() first")
        chunk = self.config.row_length if pack else None
        inputs: list[list[int]] = []
        targets: list[list[int]] = []
        line_of: list[int] = []
        num_words: list[int] = []
        for index, (line, ids) in enumerate(
            zip(lines, self.tokenizer.encode_batch(lines), strict=True)
        ):
            full = [BOS_ID, *ids, EOS_ID]
            num_targets = len(full) - 1
            step = chunk or num_targets
            for start in range(0, num_targets, step):
                end = min(start + step, num_targets)
                inputs.append(full[start:end])
                targets.append(full[start + 1 : end + 1])
                line_of.append(index)
                num_words.append(len(line.split()) + 1 if start == 0 else 0)
        lengths = [len(x) for x in inputs]
        rows = pack_sequences(lengths, chunk) if chunk else [[i] for i in range(len(inputs))]
        return LMExamples(inputs, targets, line_of, num_words, lines, prompts, references, rows)

    # ---- batches --------------------------------------------------------------------------
    def train_stream(self, examples: LMExamples, seed: int) -> BatchStream:
        return BatchStream(examples.lengths(), self.config.max_tokens, seed)

    def eval_batches(self, examples: LMExamples) -> list[list[int]]:
        """Deterministic, length-sorted batches covering every row once."""
        return make_batches(
            examples.lengths(), self.config.eval_max_tokens, seed=0, epoch=0, shuffle=False
        )

    @staticmethod
    def collate(examples: LMExamples, indices: list[int]) -> NestedMap:
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
        segment_lengths = [[len(examples.input_ids[s]) for s in row] for row in rows]
        length = max(sum(x) for x in segment_lengths)
        segment_ids, positions = segment_layout(segment_lengths, length)
        ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        labels = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        for r, row in enumerate(rows):
            row_inputs = [t for s in row for t in examples.input_ids[s]]
            row_targets = [t for s in row for t in examples.target_ids[s]]
            ids[r, : len(row_inputs)] = torch.tensor(row_inputs)
            labels[r, : len(row_targets)] = torch.tensor(row_targets)
        first_lines = [examples.line_of[row[0]] for row in rows]
        return NestedMap(
            ids=ids,
            labels=labels,
            paddings=(segment_ids == 0).float(),
            segment_ids=segment_ids,
            segment_positions=positions,
            num_tokens=float((segment_ids > 0).sum()),
            num_words=float(sum(examples.num_words[s] for row in rows for s in row)),
            texts=[examples.texts[i] for i in first_lines],
            prompt_texts=[
                examples.prompt_texts[i] if examples.prompt_texts else "" for i in first_lines
            ],
            reference_texts=[
                examples.reference_texts[i] if examples.reference_texts else "" for i in first_lines
            ],
            indices=list(indices),
        )
