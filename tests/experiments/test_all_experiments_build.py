"""Every registered experiment builds, prints, round-trips, and trains one step."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from seqlab.core.config import Config
from seqlab.core.nested_map import NestedMap
from seqlab.core.registry import get_experiment, list_experiments
from seqlab.layers.packed_linear import PackedLinear, pack_linear_layers, packing_available
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.optim import LearningRateSchedule


# Speech experiments take audio batches: tests/experiments/test_asr_experiments_build.py;
# language models packed text: tests/experiments/test_lm_experiments_build.py.
@pytest.mark.parametrize(
    "name", [n for n in list_experiments() if not n.startswith(("asr.", "lm."))]
)
def test_experiment_builds_and_trains_one_step(
    name: str, text_batch: Callable[[ExperimentConfig], NestedMap]
) -> None:
    config = get_experiment(name)
    assert config.name == name
    assert Config.from_dict(config.to_dict()).to_text() == config.to_text()
    torch.manual_seed(0)
    task = config.task.build()
    batch = text_batch(config)
    schedule = LearningRateSchedule(config.trainer.schedule, config.trainer.max_steps)
    optimizer = config.trainer.optimizer.build(list(task.parameters()), lr=schedule(1))
    before = {k: v.clone() for k, v in task.state_dict().items()}
    loss, metrics = task.compute_loss(batch, task.compute_predictions(batch))
    assert torch.isfinite(loss)
    assert metrics["num_target_tokens"][0] == (5 + 1) + (9 + 1) + (3 + 1)
    loss.backward()
    optimizer.step()
    changed = [k for k, v in task.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "one optimizer step changed no weight"


@pytest.mark.skipif(not packing_available(), reason="PyTorch built without oneDNN")
@pytest.mark.parametrize(
    "name", [n for n in list_experiments() if n.endswith("_tiny") and not n.startswith("lm.")]
)
def test_packed_inference_copy_decodes_like_the_model(
    name: str,
    text_batch: Callable[[ExperimentConfig], NestedMap],
    audio_batch: Callable[[ExperimentConfig], NestedMap],
) -> None:
    """What ``decode_dataset`` decodes with: the same hypotheses as the model itself."""
    config = get_experiment(name)
    torch.manual_seed(0)
    task = config.task.build().eval()
    batch = (audio_batch if name.startswith("asr.") else text_batch)(config)
    packed = pack_linear_layers(task)
    assert any(isinstance(m, PackedLinear) for m in packed.modules())
    with torch.no_grad():
        expected, got = task.decode(batch), packed.decode(batch)
    assert got.ids == expected.ids
    if "scores" in expected:
        torch.testing.assert_close(got.scores, expected.scores, atol=1e-4, rtol=1e-4)
