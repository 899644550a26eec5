"""SentencePiece tokenizer, trained once on the training text and cached by content hash."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import sentencepiece as spm

from seqlab.core.config import Config, ConfigError, Configurable, param

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class TokenizerTrainingError(ConfigError):
    """SentencePiece cannot train on the data as configured; the message names the key."""


class SentencePieceTokenizer(Configurable):
    """A SentencePiece model with pad=0, unk=1, bos=2, eos=3."""

    @dataclasses.dataclass
    class Config(Config):
        vocab_size: int = param(
            8000, doc="Number of pieces (shared by source and target).", at_least=1
        )
        model_type: Literal["unigram", "bpe", "char", "word"] = param(
            "unigram", doc="SentencePiece algorithm: unigram, bpe, char or word."
        )
        character_coverage: float = param(
            1.0, doc="Fraction of characters covered.", above=0, at_most=1
        )
        model_path: str = param("", doc="An existing .model file; empty = train on the data.")
        max_training_sentences: int = param(
            1_000_000,
            doc="Sentences sampled to train the model (SentencePiece input limit; about 5 GB "
            "of memory and 2 minutes per million).",
            at_least=1,
        )
        user_defined_symbols: tuple[str, ...] = param(
            (), doc="Extra whole pieces with ids 4, 5, ... (e.g. target-language tags '<2es>')."
        )

    def __init__(self, config: Config, processor: spm.SentencePieceProcessor) -> None:
        self.config = config
        self.processor = processor
        if processor.pad_id() != PAD_ID or processor.eos_id() != EOS_ID:
            raise ValueError("SentencePiece model must use pad=0, unk=1, bos=2, eos=3")

    @classmethod
    def load(cls, config: Config, model_path: str | Path) -> SentencePieceTokenizer:
        """Loads a trained model file."""
        processor = spm.SentencePieceProcessor(model_file=str(model_path))
        return cls(config, processor)

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Text -> piece ids (no BOS/EOS)."""
        return self.processor.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.processor.encode(texts)

    def decode(self, ids: Iterable[int]) -> str:
        """Piece ids -> text; ids at or after EOS and special ids are dropped."""
        out: list[int] = []
        for i in ids:
            if i == EOS_ID:
                break
            if i > EOS_ID:
                out.append(int(i))
        return self.processor.decode(out)


def train_or_load_sentencepiece(
    config: SentencePieceTokenizer.Config, texts: list[str], cache_dir: Path
) -> tuple[SentencePieceTokenizer, Path]:
    """Returns the tokenizer and its model path, training it on ``texts`` unless cached.

    The cache key is the hash of the training text and the config, so the same data and
    settings reuse the same model.
    """
    if config.model_path:
        return SentencePieceTokenizer.load(config, config.model_path), Path(config.model_path)
    digest = hashlib.sha256()
    key_fields = dataclasses.astuple(config)
    if not config.user_defined_symbols:
        # The field came later: without symbols, keep the keys of models cached before it.
        key_fields = key_fields[:-1]
    digest.update(repr(key_fields).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\n")
    key = digest.hexdigest()[:16]
    model_path = cache_dir / f"spm-{config.model_type}-{config.vocab_size}-{key}.model"
    if not model_path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        model = _train_model(config, sentence_iterator=iter(texts))
        tmp = model_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(model)
        os.replace(tmp, model_path)
    return SentencePieceTokenizer.load(config, model_path), model_path


def train_or_load_sentencepiece_from_files(
    config: SentencePieceTokenizer.Config,
    key: str,
    write_inputs: Callable[[Path], list[Path]],
    cache_dir: Path,
) -> tuple[SentencePieceTokenizer, Path]:
    """Returns the tokenizer cached under ``key`` (e.g. the training file's content hash),
    training it first, if it is not cached, on the text files ``write_inputs(tmp_dir)``
    writes (one sentence a line).

    SentencePiece reads the files itself and samples at most
    ``config.max_training_sentences`` of their lines, so no list of the corpus is held.
    """
    if config.model_path:
        return SentencePieceTokenizer.load(config, config.model_path), Path(config.model_path)
    digest = hashlib.sha256(repr((dataclasses.astuple(config), key)).encode()).hexdigest()[:16]
    model_path = cache_dir / f"spm-{config.model_type}-{config.vocab_size}-{digest}.model"
    if not model_path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            inputs = write_inputs(Path(tmp))
            model = _train_model(config, input=[str(p) for p in inputs])
        tmp_model = model_path.with_suffix(f".tmp{os.getpid()}")
        tmp_model.write_bytes(model)
        os.replace(tmp_model, model_path)
    return SentencePieceTokenizer.load(config, model_path), model_path


_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


def _train_model(config: SentencePieceTokenizer.Config, **source: object) -> bytes:
    """The bytes of a SentencePiece model trained on ``source`` (``input`` files or a
    ``sentence_iterator``).

    Raises:
      TokenizerTrainingError: naming data.tokenizer's key to change, e.g. the largest
        vocabulary size the data allows.
    """
    stream = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(model_writer=stream, **source, **_trainer_options(config))
    except RuntimeError as e:
        too_high = _TOO_HIGH.search(str(e))
        if too_high:
            size, fits = too_high.groups()
            message = (
                f"data.tokenizer.vocab_size={size} is too large for the training data: at most "
                f"{fits} pieces fit; set data.tokenizer.vocab_size to {fits} or less, and the "
                "model's vocabulary (e.g. task.embedding.vocab_size) to match"
            )
        elif "sentences_.empty()" in str(e):
            message = "the training data has no text to train data.tokenizer on (blank lines only)"
        else:
            message = f"SentencePiece could not train data.tokenizer: {str(e).splitlines()[0]}"
        raise TokenizerTrainingError(message) from None
    return stream.getvalue()


def _trainer_options(config: SentencePieceTokenizer.Config) -> dict[str, object]:
    return dict(
        vocab_size=config.vocab_size,
        model_type=config.model_type,
        character_coverage=config.character_coverage,
        input_sentence_size=config.max_training_sentences,
        shuffle_input_sentence=True,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        user_defined_symbols=list(config.user_defined_symbols),
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )


def copy_model(model_path: Path, dest: Path) -> None:
    """Copies a model file next to a run (so a logdir is self-contained)."""
    if not dest.exists() or dest.read_bytes() != model_path.read_bytes():
        tmp = dest.with_suffix(".tmp")
        shutil.copyfile(model_path, tmp)
        os.replace(tmp, dest)
