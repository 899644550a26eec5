"""The punctuator's input: TSV pairs (plain text TAB original) -> word pieces with labels.

Every word is cut into SentencePiece pieces on its own; its labels sit on its last piece, so
the tagger predicts them after it has read the whole word.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from seqlab.core.config import Config, Configurable, param
from seqlab.core.layer import lengths_to_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.data.batching import BatchStream, make_batches
from seqlab.data.mt_data import default_cache_dir
from seqlab.data.sentencepiece_tokenizer import (
    PAD_ID,
    SentencePieceTokenizer,
    train_or_load_sentencepiece,
)
from seqlab.data.text_pairs import DataFormatError, read_text_pairs

from .labels import words_and_labels


@dataclasses.dataclass
class TaggedSentences:
    """A split: plain words, their pieces, labels, and the original sentences."""

    words: list[list[str]]
    piece_ids: list[list[list[int]]]
    """Per sentence, per word, its pieces."""
    cases: list[list[int]]
    marks: list[list[int]]
    originals: list[str]

    def __len__(self) -> int:
        return len(self.words)

    def lengths(self) -> list[int]:
        """Pieces per sentence."""
        return [sum(len(p) for p in pieces) for pieces in self.piece_ids]


class PunctuatorData(Configurable):
    """Pairs made by make_pairs.py; the tokenizer is trained on the plain (input) side."""

    @dataclasses.dataclass
    class Config(Config):
        train_path: str = param("data/punctuator/train.tsv", doc="Training pairs (TSV).")
        dev_path: str = param("data/punctuator/dev.tsv", doc="Dev pairs (TSV).")
        test_path: str = param("data/punctuator/test.tsv", doc="Test pairs (TSV).")
        cache_dir: str = param("", doc="Where tokenizers are cached; empty = default.")
        tokenizer: SentencePieceTokenizer.Config = param(
            SentencePieceTokenizer.Config(vocab_size=4000), doc="Pieces of the plain words."
        )
        max_tokens: int = param(4096, doc="Padded pieces per training batch.")
        eval_max_tokens: int = param(8192, doc="Padded pieces per eval/decode batch.")
        max_length: int = param(200, doc="Training sentences longer than this (pieces) dropped.")
        train_limit: int = param(0, doc="Use only the first N training pairs (0 = all).")
        eval_limit: int = param(0, doc="Use only the first N dev/test pairs (0 = all).")

    config: Config

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        self.tokenizer: SentencePieceTokenizer | None = None
        self.tokenizer_path: Path | None = None

    def _pairs(self, split: str) -> list[tuple[str, str]]:
        path = getattr(self.config, f"{split}_path")
        pairs = read_text_pairs(path)
        limit = self.config.train_limit if split == "train" else self.config.eval_limit
        return pairs[:limit] if limit > 0 else pairs

    def load_tokenizer(self, model_path: Path | None = None) -> SentencePieceTokenizer:
        """Loads ``model_path`` if given, else trains (or reuses) one on the plain texts."""
        if model_path is not None and model_path.exists():
            self.tokenizer = SentencePieceTokenizer.load(self.config.tokenizer, model_path)
            self.tokenizer_path = model_path
        else:
            texts = [plain for plain, _ in self._pairs("train")]
            self.tokenizer, self.tokenizer_path = train_or_load_sentencepiece(
                self.config.tokenizer, texts, self.cache_dir / "tokenizers"
            )
        return self.tokenizer

    def examples(self, split: str) -> TaggedSentences:
        """The labeled sentences of ``split``.

        Raises:
          DataFormatError: naming the file and pair whose plain side does not match the
            words of its original (pairs not made by make_pairs.py).
        """
        words, cases, marks, originals = [], [], [], []
        for number, (plain, original) in enumerate(self._pairs(split), start=1):
            sentence_words, sentence_cases, sentence_marks = words_and_labels(original)
            if sentence_words != plain.split():
                path = getattr(self.config, f"{split}_path")
                raise DataFormatError(
                    f"{path}: pair {number}: the plain text {plain!r} is not the words of "
                    f"{original!r}; make the pairs with examples/punctuator/make_pairs.py"
                )
            words.append(sentence_words)
            cases.append(sentence_cases)
            marks.append(sentence_marks)
            originals.append(original)
        examples = self._tokenize(words, cases, marks, originals)
        if split == "train":
            keep = [i for i, n in enumerate(examples.lengths()) if n <= self.config.max_length]
            examples = TaggedSentences(
                *([field[i] for i in keep] for field in dataclasses.astuple(examples))
            )
        return examples

    def examples_from_texts(self, texts: list[str]) -> TaggedSentences:
        """Unlabeled sentences to restore (``seqlab infer``): the words of each text."""
        words = [text.lower().split() for text in texts]
        zeros = [[0] * len(w) for w in words]
        return self._tokenize(words, zeros, zeros, list(texts))

    def _tokenize(
        self, words: list[list[str]], cases: list[list[int]], marks: list[list[int]],
        originals: list[str],
    ) -> TaggedSentences:  # fmt: skip
        if self.tokenizer is None:
            raise RuntimeError("call load_tokenizer() first")
        piece_ids = [self.tokenizer.encode_batch(w) if w else [] for w in words]
        return TaggedSentences(words, piece_ids, cases, marks, originals)

    def train_stream(self, examples: TaggedSentences, seed: int) -> BatchStream:
        return BatchStream(examples.lengths(), self.config.max_tokens, seed)

    def eval_batches(self, examples: TaggedSentences) -> list[list[int]]:
        """Deterministic, length-sorted batches covering every sentence once."""
        return make_batches(
            examples.lengths(), self.config.eval_max_tokens, seed=0, epoch=0, shuffle=False
        )

    @staticmethod
    def collate(examples: TaggedSentences, indices: list[int]) -> NestedMap:
        """Pads the chosen sentences into a batch.

        Returns:
          NestedMap with ids [B, T] (pieces), paddings [B, T] (1.0 = pad), cases and marks
          [B, T] (labels on each word's last piece), label_weights [B, T] (1.0 on those
          pieces), num_tokens (pieces), and per sentence ``words`` and ``originals``.
        """
        lengths = [max(1, sum(map(len, examples.piece_ids[i]))) for i in indices]
        shape = (len(indices), max(lengths))
        ids = torch.full(shape, PAD_ID, dtype=torch.long)
        cases = torch.zeros(shape, dtype=torch.long)
        marks = torch.zeros(shape, dtype=torch.long)
        weights = torch.zeros(shape)
        for row, i in enumerate(indices):
            position = 0
            for pieces, case, mark in zip(
                examples.piece_ids[i], examples.cases[i], examples.marks[i], strict=True
            ):
                ids[row, position : position + len(pieces)] = torch.tensor(pieces)
                position += len(pieces)
                cases[row, position - 1], marks[row, position - 1] = case, mark
                weights[row, position - 1] = 1.0
        paddings = lengths_to_paddings(torch.tensor(lengths), shape[1])
        return NestedMap(
            ids=ids,
            paddings=paddings,
            cases=cases,
            marks=marks,
            label_weights=weights,
            num_tokens=float((paddings < 0.5).sum()),
            words=[examples.words[i] for i in indices],
            originals=[examples.originals[i] for i in indices],
            indices=list(indices),
        )
