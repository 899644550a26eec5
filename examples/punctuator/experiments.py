"""The punctuator's registered experiments: every dimension computed here, up front."""

from __future__ import annotations

from seqlab.core.registry import register_experiment
from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer
from seqlab.layers.embedding import SinusoidalPositions, TokenEmbedding
from seqlab.layers.linear import Linear
from seqlab.layers.transformer import encoder_config
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.optim import LearningRateSchedule
from seqlab.train.trainer_config import TrainerConfig

from .data import PunctuatorData
from .labels import CASES, PUNCTUATION
from .tagger import PunctuatorTagger


def punctuator_experiment(
    *, vocab_size: int, num_layers: int, model_dim: int, num_heads: int, max_steps: int
) -> ExperimentConfig:
    """A Transformer-encoder tagger over ``vocab_size`` pieces, trained ``max_steps`` steps."""
    return ExperimentConfig(
        task=PunctuatorTagger.Config(
            embedding=TokenEmbedding.Config(vocab_size=vocab_size, model_dim=model_dim),
            positions=SinusoidalPositions.Config(model_dim=model_dim),
            encoder=encoder_config(
                num_layers=num_layers,
                model_dim=model_dim,
                num_heads=num_heads,
                hidden_dim=4 * model_dim,
            ),
            case_head=Linear.Config(input_dim=model_dim, output_dim=len(CASES)),
            mark_head=Linear.Config(input_dim=model_dim, output_dim=len(PUNCTUATION)),
        ),
        data=PunctuatorData.Config(tokenizer=SentencePieceTokenizer.Config(vocab_size=vocab_size)),
        trainer=TrainerConfig(
            max_steps=max_steps,
            schedule=LearningRateSchedule.Config(
                kind="cosine", peak_learning_rate=1e-3, warmup_steps=max_steps // 10
            ),
            checkpoint_every_steps=max_steps // 4,
            eval_every_steps=max_steps // 4,
            decode_every_steps=max_steps // 2,
            decode_limit=100,
        ),
    )


@register_experiment("punctuator.bible_en.transformer")
def transformer() -> ExperimentConfig:
    """3 layers of width 256: about 20 minutes on 2 CPU cores."""
    return punctuator_experiment(
        vocab_size=4000, num_layers=3, model_dim=256, num_heads=4, max_steps=1500
    )


@register_experiment("punctuator.bible_en.tiny")
def tiny() -> ExperimentConfig:
    """A one-minute check that everything runs."""
    return punctuator_experiment(
        vocab_size=500, num_layers=1, model_dim=64, num_heads=2, max_steps=60
    )
