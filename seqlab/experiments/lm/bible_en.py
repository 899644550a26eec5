"""Language models of the English Bible (KJV), split by whole books (corpus ``bible_en``), and
character language models to fuse with the ``flite_bible`` recognizers (corpus
``bible_en_asr_lm``: the same text in spoken form, without the recognizers' dev and test
verses)."""

from __future__ import annotations

from typing import Literal

from seqlab.core.registry import register_experiment
from seqlab.data.lm_data import LMData
from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer
from seqlab.decoding.sampling import Sampler
from seqlab.experiments.asr.flite_bible import GRAPHEME_VOCAB_SIZE
from seqlab.layers.embedding import SinusoidalPositions, TokenEmbedding
from seqlab.layers.lstm_cell import LSTMCell
from seqlab.layers.rnn import LSTMStack
from seqlab.layers.transformer import encoder_config
from seqlab.models.lm.lstm_lm import LSTMLM
from seqlab.models.lm.transformer_lm import TransformerLM
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.optim import LearningRateSchedule
from seqlab.train.trainer_config import TrainerConfig

# Top-p sampling: fluent yet varied continuations of the dev prompts.
_SAMPLER = Sampler.Config(temperature=1.0, top_p=0.9, max_new_tokens=40, seed=1)


def lm_data_config(
    *,
    vocab_size: int,
    row_length: int,
    max_tokens: int,
    corpus: str = "bible_en",
    model_type: Literal["unigram", "char"] = "unigram",
) -> LMData.Config:
    """Packed rows of ``row_length`` tokens, ``max_tokens`` per training batch."""
    return LMData.Config(
        corpus=corpus,
        tokenizer=SentencePieceTokenizer.Config(vocab_size=vocab_size, model_type=model_type),
        row_length=row_length,
        max_tokens=max_tokens,
    )


def transformer_lm_config(
    *,
    vocab_size: int,
    num_layers: int,
    model_dim: int,
    hidden_dim: int,
    num_heads: int,
    dropout_prob: float,
) -> TransformerLM.Config:
    """A pre-LN decoder-only Transformer with every dimension computed here, up front."""
    return TransformerLM.Config(
        embedding=TokenEmbedding.Config(vocab_size=vocab_size, model_dim=model_dim),
        positions=SinusoidalPositions.Config(model_dim=model_dim, max_length=1024),
        input_dropout_prob=dropout_prob,
        stack=encoder_config(
            num_layers=num_layers,
            model_dim=model_dim,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            dropout_prob=dropout_prob,
        ),
        sampler=_SAMPLER,
    )


def lstm_lm_config(
    *, vocab_size: int, num_layers: int, model_dim: int, dropout_prob: float
) -> LSTMLM.Config:
    """Stacked LSTMs of ``model_dim`` units with dropout between them and a tied softmax."""
    return LSTMLM.Config(
        embedding=TokenEmbedding.Config(vocab_size=vocab_size, model_dim=model_dim),
        input_dropout_prob=dropout_prob,
        lstm=LSTMStack.Config(
            input_dim=model_dim,
            num_layers=num_layers,
            cell=LSTMCell.Config(num_units=model_dim),
            dropout_prob=dropout_prob,
            residual_start_layer=num_layers,
        ),
        sampler=_SAMPLER,
    )


def _small_trainer(max_steps: int, peak_learning_rate: float, warmup_steps: int) -> TrainerConfig:
    """A short warm-up and a cosine decay ending exactly at ``max_steps``."""
    return TrainerConfig(
        max_steps=max_steps,
        schedule=LearningRateSchedule.Config(
            kind="cosine",
            peak_learning_rate=peak_learning_rate,
            warmup_steps=warmup_steps,
            final_fraction=0.02,
        ),
        mixed_precision="bfloat16",
        checkpoint_every_steps=200,
        eval_every_steps=max_steps // 4,
        decode_every_steps=max_steps // 2,
        decode_limit=40,
        eval_datasets=("dev",),
        decode_datasets=("dev",),
    )


def _tiny_trainer() -> TrainerConfig:
    """A few-second run for tests."""
    return TrainerConfig(
        max_steps=100,
        schedule=LearningRateSchedule.Config(
            kind="cosine", peak_learning_rate=3e-3, warmup_steps=10
        ),
        log_every_steps=10,
        checkpoint_every_steps=50,
        eval_every_steps=50,
        decode_every_steps=100,
        decode_limit=8,
    )


@register_experiment("lm.bible_en.transformer_small")
def transformer_small() -> ExperimentConfig:
    """4 layers of width 256; 1,400 steps of 8k tokens, about 11 epochs of the training books.

    Measured at 2.95 s a step on one core (about 69 minutes for the preset); docs/
    language-models.md has the test perplexity after 370 steps."""
    return ExperimentConfig(
        task=transformer_lm_config(
            vocab_size=8000,
            num_layers=4,
            model_dim=256,
            hidden_dim=1024,
            num_heads=4,
            dropout_prob=0.1,
        ),
        data=lm_data_config(vocab_size=8000, row_length=256, max_tokens=8192),
        trainer=_small_trainer(max_steps=1400, peak_learning_rate=1.5e-3, warmup_steps=200),
    )


@register_experiment("lm.bible_en.lstm_small")
def lstm_small() -> ExperimentConfig:
    """2 LSTM layers of 512 units; 600 steps of 8k tokens.

    Measured at 5.6 s a step on one core (about 56 minutes for the preset; the recurrence is
    sequential); docs/language-models.md has the test perplexity after 200 steps."""
    return ExperimentConfig(
        task=lstm_lm_config(vocab_size=8000, num_layers=2, model_dim=512, dropout_prob=0.2),
        data=lm_data_config(vocab_size=8000, row_length=256, max_tokens=8192),
        trainer=_small_trainer(max_steps=600, peak_learning_rate=3e-3, warmup_steps=100),
    )


@register_experiment("lm.bible_en.transformer_tiny")
def transformer_tiny() -> ExperimentConfig:
    """A few-second Transformer LM for tests."""
    return ExperimentConfig(
        task=transformer_lm_config(
            vocab_size=500,
            num_layers=2,
            model_dim=64,
            hidden_dim=128,
            num_heads=2,
            dropout_prob=0.0,
        ),
        data=lm_data_config(vocab_size=500, row_length=64, max_tokens=1024),
        trainer=_tiny_trainer(),
    )


@register_experiment("lm.bible_en.lstm_tiny")
def lstm_tiny() -> ExperimentConfig:
    """A few-second LSTM LM for tests."""
    return ExperimentConfig(
        task=lstm_lm_config(vocab_size=500, num_layers=2, model_dim=64, dropout_prob=0.0),
        data=lm_data_config(vocab_size=500, row_length=64, max_tokens=1024),
        trainer=_tiny_trainer(),
    )


def _asr_lm(
    trainer: TrainerConfig, num_layers: int, model_dim: int, row_length: int
) -> ExperimentConfig:
    """A character Transformer LM over the recognizers' labels (graphemes, 32 pieces)."""
    return ExperimentConfig(
        task=transformer_lm_config(
            vocab_size=GRAPHEME_VOCAB_SIZE,
            num_layers=num_layers,
            model_dim=model_dim,
            hidden_dim=4 * model_dim,
            num_heads=4 if model_dim >= 128 else 2,
            dropout_prob=0.1 if model_dim >= 128 else 0.0,
        ),
        data=lm_data_config(
            vocab_size=GRAPHEME_VOCAB_SIZE,
            row_length=row_length,
            max_tokens=16 * row_length,
            corpus="bible_en_asr_lm",
            model_type="char",
        ),
        trainer=trainer,
    )


@register_experiment("lm.bible_en_asr_lm.transformer_small")
def asr_lm_transformer_small() -> ExperimentConfig:
    """4 layers of width 256 over characters, rows of 512; the language model that
    ``task.lm_fusion`` fuses into ``asr.flite_bible.*`` decoding (docs/speech.md).

    900 steps of 8k characters (about 1.8 epochs): 18 min 18 s on the idle 2-core machine,
    dev perplexity 3.90 a character (docs/speech.md)."""
    return _asr_lm(
        _small_trainer(max_steps=900, peak_learning_rate=1.5e-3, warmup_steps=100),
        num_layers=4,
        model_dim=256,
        row_length=512,
    )


@register_experiment("lm.bible_en_asr_lm.transformer_tiny")
def asr_lm_transformer_tiny() -> ExperimentConfig:
    """A few-second character LM for tests."""
    return _asr_lm(_tiny_trainer(), num_layers=2, model_dim=64, row_length=128)
