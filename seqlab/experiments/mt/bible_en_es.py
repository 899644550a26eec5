"""English -> Spanish on the Bible (KJV -> Reina-Valera 1909), split by whole books."""

from __future__ import annotations

import dataclasses
from typing import Literal

from seqlab.core.registry import register_experiment
from seqlab.data.mt_data import MTData
from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer
from seqlab.decoding.beam_search import BeamSearch
from seqlab.layers.attention_positions import (
    AttentionPositions,
    RotaryPositions,
    T5RelativeBias,
)
from seqlab.layers.cross_entropy import LabelSmoothedCrossEntropy
from seqlab.layers.embedding import (
    AbsolutePositions,
    LearnedPositions,
    SinusoidalPositions,
    TokenEmbedding,
)
from seqlab.layers.lstm_cell import LSTMCell
from seqlab.layers.rnn import BidirectionalLSTMStack
from seqlab.layers.transformer import decoder_config, encoder_config, fit_positions_to_heads
from seqlab.models.mt.rnmt_decoder import rnmt_decoder_config
from seqlab.models.mt.rnmt_model import RNMTPlusMT
from seqlab.models.mt.transformer_model import TransformerMT
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.optim import LearningRateSchedule
from seqlab.train.trainer_config import TrainerConfig


def transformer_experiment(
    *,
    vocab_size: int,
    num_layers: int,
    model_dim: int,
    hidden_dim: int,
    num_heads: int,
    dropout_prob: float,
    max_tokens: int,
    trainer: TrainerConfig,
    absolute_positions: Literal["sinusoidal", "learned", "none"] = "sinusoidal",
    relative_positions: AttentionPositions.Config | None = None,
) -> ExperimentConfig:
    """A Transformer on bible_en_es with every dimension computed here, up front.

    ``absolute_positions`` are added to the embeddings; ``relative_positions`` (rotary, Shaw
    et al., T5 bias) go into every self-attention, sized by the helpers.
    """
    positions = _absolute_positions(absolute_positions, model_dim)
    return ExperimentConfig(
        seed=1234,
        task=TransformerMT.Config(
            embedding=TokenEmbedding.Config(vocab_size=vocab_size, model_dim=model_dim),
            positions=positions,
            input_dropout_prob=dropout_prob,
            encoder=encoder_config(
                num_layers=num_layers,
                model_dim=model_dim,
                num_heads=num_heads,
                hidden_dim=hidden_dim,
                dropout_prob=dropout_prob,
                relative_positions=relative_positions,
            ),
            decoder=decoder_config(
                num_layers=num_layers,
                model_dim=model_dim,
                num_heads=num_heads,
                hidden_dim=hidden_dim,
                dropout_prob=dropout_prob,
                relative_positions=relative_positions,
            ),
            loss=LabelSmoothedCrossEntropy.Config(label_smoothing=0.1),
            beam_search=BeamSearch.Config(beam_size=4, length_penalty_alpha=0.6),
        ),
        data=MTData.Config(
            corpus="bible_en_es",
            tokenizer=SentencePieceTokenizer.Config(vocab_size=vocab_size),
            max_tokens=max_tokens,
        ),
        trainer=trainer,
    )


def _absolute_positions(
    kind: Literal["sinusoidal", "learned", "none"], model_dim: int
) -> AbsolutePositions.Config | None:
    if kind == "sinusoidal":
        return SinusoidalPositions.Config(model_dim=model_dim, max_length=1024)
    if kind == "learned":
        return LearnedPositions.Config(model_dim=model_dim, max_length=1024)
    return None


def with_positions(
    experiment: ExperimentConfig,
    absolute: Literal["sinusoidal", "learned", "none"],
    relative: AttentionPositions.Config | None,
) -> ExperimentConfig:
    """A Transformer ``experiment`` with other absolute and relative positions (sized here).

    A T5 bias becomes unidirectional in the decoder, as :func:`decoder_config` does.
    """
    task = experiment.task
    assert isinstance(task, TransformerMT.Config)
    task.positions = _absolute_positions(absolute, task.embedding.model_dim)
    for stack in (task.encoder, task.decoder):
        attention = stack.layer.self_attention
        fitted = relative
        if relative is not None:
            if stack is task.decoder and isinstance(relative, T5RelativeBias.Config):
                fitted = dataclasses.replace(relative, bidirectional=False)
            head_dim = attention.model_dim // attention.num_heads
            fitted = fit_positions_to_heads(fitted, attention.num_heads, head_dim)
        attention.relative_positions = fitted
    return experiment


@register_experiment("mt.bible_en_es.transformer_small_rope")
def transformer_small_rope() -> ExperimentConfig:
    """transformer_small with rotary positions in every self-attention and no absolute ones."""
    return with_positions(transformer_small(), "none", RotaryPositions.Config())


@register_experiment("mt.bible_en_es.transformer_small")
def transformer_small() -> ExperimentConfig:
    """Sized for the README's main job: about 40 minutes of training on 2 CPU cores.

    For a short CPU budget: 3+3 layers of width 256, bfloat16 autocast (about 1.4x faster
    on CPUs with AVX512-BF16), a short warm-up and a cosine decay to the end of the budget.
    """
    return transformer_experiment(
        vocab_size=8000,
        num_layers=3,
        model_dim=256,
        hidden_dim=1024,
        num_heads=4,
        dropout_prob=0.1,
        max_tokens=4096,
        trainer=TrainerConfig(
            max_steps=1700,
            schedule=LearningRateSchedule.Config(
                kind="cosine", peak_learning_rate=1.5e-3, warmup_steps=200, final_fraction=0.02
            ),
            mixed_precision="bfloat16",
            checkpoint_every_steps=100,
            eval_every_steps=425,
            decode_every_steps=850,
        ),
    )


@register_experiment("mt.bible_en_es.transformer_base")
def transformer_base() -> ExperimentConfig:
    """The paper's base shape: 6+6 layers, model dim 512, FFN 2048, 8 heads."""
    return transformer_experiment(
        vocab_size=16000,
        num_layers=6,
        model_dim=512,
        hidden_dim=2048,
        num_heads=8,
        dropout_prob=0.1,
        max_tokens=8192,
        trainer=TrainerConfig(
            max_steps=100000,
            schedule=LearningRateSchedule.Config(
                kind="inverse_sqrt", peak_learning_rate=7e-4, warmup_steps=4000
            ),
        ),
    )


@register_experiment("mt.bible_en_es.transformer_tiny")
def transformer_tiny() -> ExperimentConfig:
    """A few-second model for tests."""
    return transformer_experiment(
        vocab_size=1000,
        num_layers=2,
        model_dim=64,
        hidden_dim=128,
        num_heads=2,
        dropout_prob=0.1,
        max_tokens=1024,
        trainer=TrainerConfig(
            max_steps=200,
            schedule=LearningRateSchedule.Config(
                kind="cosine", peak_learning_rate=3e-3, warmup_steps=30
            ),
            log_every_steps=10,
            checkpoint_every_steps=50,
            eval_every_steps=100,
            decode_every_steps=200,
            decode_limit=50,
        ),
    )


# ---- RNMT+ and the hybrid (Chen et al. 2018, "The Best of Both Worlds") ----------------------


def rnmt_cell(num_units: int) -> LSTMCell.Config:
    """RNMT+'s cell: per-gate layer normalization, cell values clipped to [-10, 10]."""
    return LSTMCell.Config(num_units=num_units, gate_layer_norm=True, cell_value_cap=10.0)


def rnmt_experiment(
    *,
    hybrid: bool,
    vocab_size: int,
    model_dim: int,
    num_layers: int,
    num_heads: int,
    dropout_prob: float,
    max_tokens: int,
    trainer: TrainerConfig,
) -> ExperimentConfig:
    """An RNMT+ decoder over an RNMT+ encoder or, with ``hybrid``, over a Transformer encoder,
    on bible_en_es, with every dimension computed here, up front.

    Encoder and decoder have ``num_layers`` layers each, all with outputs of width
    ``model_dim``: bidirectional LSTM layers of ``model_dim / 2`` units per direction (residual
    connections from the third layer on, as in RNMT+), or the Transformer encoder, source
    positions, data, loss and beam search that :func:`transformer_experiment` makes
    (``num_heads`` heads, a ``4 * model_dim`` feed-forward).
    """
    config = transformer_experiment(
        vocab_size=vocab_size,
        num_layers=num_layers,
        model_dim=model_dim,
        hidden_dim=4 * model_dim,
        num_heads=num_heads,
        dropout_prob=dropout_prob,
        max_tokens=max_tokens,
        trainer=trainer,
    )
    transformer = config.task
    config.task = RNMTPlusMT.Config(
        embedding=transformer.embedding,
        source_positions=transformer.positions if hybrid else None,
        input_dropout_prob=dropout_prob,
        encoder=transformer.encoder
        if hybrid
        else BidirectionalLSTMStack.Config(
            input_dim=model_dim,
            num_layers=num_layers,
            cell=rnmt_cell(model_dim // 2),
            dropout_prob=dropout_prob,
            residual_start_layer=2,
        ),
        decoder=rnmt_decoder_config(
            num_layers=num_layers,
            model_dim=model_dim,
            encoder_dim=model_dim,
            num_heads=num_heads,
            dropout_prob=dropout_prob,
            cell=rnmt_cell(model_dim),
        ),
        loss=transformer.loss,
        beam_search=transformer.beam_search,
    )
    return config


def rnmt_small_experiment(hybrid: bool, max_steps: int) -> ExperimentConfig:
    """transformer_small's size (vocabulary 8000, 3 + 3 layers of width 256, 4 heads) and
    trainer (bf16, cosine schedule), for ``max_steps`` steps."""
    trainer = transformer_small().trainer
    trainer.max_steps = max_steps
    trainer.eval_every_steps = max_steps // 4
    trainer.decode_every_steps = max_steps // 2
    return rnmt_experiment(
        hybrid=hybrid,
        vocab_size=8000,
        model_dim=256,
        num_layers=3,
        num_heads=4,
        dropout_prob=0.1,
        max_tokens=4096,
        trainer=trainer,
    )


def rnmt_tiny_experiment(hybrid: bool) -> ExperimentConfig:
    """transformer_tiny's size and trainer: a few seconds of training, for tests."""
    return rnmt_experiment(
        hybrid=hybrid,
        vocab_size=1000,
        model_dim=64,
        num_layers=2,
        num_heads=2,
        dropout_prob=0.1,
        max_tokens=1024,
        trainer=transformer_tiny().trainer,
    )


@register_experiment("mt.bible_en_es.rnmt_small")
def rnmt_small() -> ExperimentConfig:
    """RNMT+ for about 40 minutes of training on 2 CPU cores, like transformer_small.

    On 5 real batches of ~3.8k target tokens a bf16 training step took 2.0x
    transformer_small's (interleaved in one process on a crowded machine; fp32 steps were
    1.4-1.7x slower than bf16), hence 900 steps to its 1700.
    """
    return rnmt_small_experiment(hybrid=False, max_steps=900)


@register_experiment("mt.bible_en_es.rnmt_tiny")
def rnmt_tiny() -> ExperimentConfig:
    """A few-second RNMT+ for tests."""
    return rnmt_tiny_experiment(hybrid=False)


@register_experiment("mt.bible_en_es.hybrid_small")
def hybrid_small() -> ExperimentConfig:
    """The hybrid (transformer_small's encoder, RNMT+ decoder) for about 40 minutes on 2 cores.

    A bf16 training step took 1.5x transformer_small's (measured as for rnmt_small), hence
    1100 steps to its 1700.
    """
    return rnmt_small_experiment(hybrid=True, max_steps=1100)


@register_experiment("mt.bible_en_es.hybrid_tiny")
def hybrid_tiny() -> ExperimentConfig:
    """A few-second hybrid for tests."""
    return rnmt_tiny_experiment(hybrid=True)
