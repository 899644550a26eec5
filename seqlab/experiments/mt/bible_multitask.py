"""English -> Spanish and Spanish -> English on the Bible in one multi-task model.

Both directions share the encoder, the decoder and the embeddings, and one joint
SentencePiece vocabulary. As in Johnson et al. (2017), a target-language tag tells the shared
decoder which language to produce: here it is the decoder's start symbol (``<2es>``, ``<2en>``,
pieces 4 and 5 of the vocabulary) instead of BOS.
"""

from __future__ import annotations

import dataclasses

from seqlab.core.registry import register_experiment
from seqlab.data.multi_task_data import MultiTaskData
from seqlab.experiments.mt.bible_en_es import transformer_small, transformer_tiny
from seqlab.models.multi_task import MultiTaskModel
from seqlab.train.experiment import ExperimentConfig

# Task name -> (reverse bible_en_es, target-language tag). Tags get ids 4, 5, ... in order.
DIRECTIONS = {"en_es": (False, "<2es>"), "es_en": (True, "<2en>")}
FIRST_USER_DEFINED_ID = 4


def both_directions(single: ExperimentConfig, steps_factor: int) -> ExperimentConfig:
    """Both directions of the bible_en_es experiment ``single``, 50/50, sharing everything
    but the start symbol; its training budget and intervals grow by ``steps_factor``."""
    tags = tuple(tag for _, tag in DIRECTIONS.values())
    single.data.tokenizer.user_defined_symbols = tags
    task_configs, data_configs = {}, {}
    for k, (name, (reverse, _)) in enumerate(DIRECTIONS.items()):
        task_configs[name] = dataclasses.replace(
            single.task.copy(), start_id=FIRST_USER_DEFINED_ID + k
        )
        data_configs[name] = dataclasses.replace(single.data.copy(), reverse=reverse)
    probabilities = {name: 1.0 / len(DIRECTIONS) for name in DIRECTIONS}
    datasets = tuple(f"dev_{name}" for name in DIRECTIONS)
    trainer = single.trainer
    return ExperimentConfig(
        seed=single.seed,
        task=MultiTaskModel.Config(
            tasks=task_configs,
            task_probabilities=probabilities,
            shared=("encoder", "decoder", "embedding"),
        ),
        data=MultiTaskData.Config(tasks=data_configs, task_probabilities=dict(probabilities)),
        trainer=dataclasses.replace(
            trainer,
            max_steps=trainer.max_steps * steps_factor,
            eval_every_steps=trainer.eval_every_steps * steps_factor,
            decode_every_steps=trainer.decode_every_steps * steps_factor,
            eval_datasets=datasets,
            decode_datasets=datasets,
        ),
    )


@register_experiment("mt.bible_multitask.en_es_es_en")
def en_es_es_en() -> ExperimentConfig:
    """transformer_small's shape and schedule, with twice the steps for the two directions."""
    return both_directions(transformer_small(), steps_factor=2)


@register_experiment("mt.bible_multitask.en_es_es_en_tiny")
def en_es_es_en_tiny() -> ExperimentConfig:
    """A few-second model for tests: transformer_tiny's, with its budget."""
    return both_directions(transformer_tiny(), steps_factor=1)
