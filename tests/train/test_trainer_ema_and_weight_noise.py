"""The trainer with a moving average of the weights and weight noise, on a slice of the Bible:
resume stays bitwise identical, noise acts in training only, eval/decode/infer use the average."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seqlab.cli import main
from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.export.predictor import Predictor
from seqlab.train.checkpoint import list_checkpoints, load_checkpoint
from seqlab.train.evaler import evaluate
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.trainer import Trainer, rng_state, set_rng_state

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


def tiny_config(cache_dir: Path, *overrides: str) -> ExperimentConfig:
    config = get_experiment("mt.bible_en_es.transformer_tiny")
    config.apply_overrides(
        [
            f"data.cache_dir={cache_dir}",
            "data.train_limit=300",
            "data.eval_limit=10",
            "trainer.max_steps=8",
            "trainer.checkpoint_every_steps=4",
            "trainer.keep_checkpoints=0",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            "trainer.num_threads=1",
            *overrides,
        ]
    )
    return config


def _equal(a: object, b: object) -> bool:
    """Bitwise equality of nested checkpoint contents."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_resume_is_bitwise_identical_with_ema_and_weight_noise(
    bible_cache_dir: Path, tmp_path: Path, train_until_crash: Callable[[Trainer, int], None]
) -> None:
    config = tiny_config(
        bible_cache_dir,
        "trainer.ema.decay=0.9",
        "trainer.ema.start_step=2",
        "trainer.weight_noise.std=0.02",
        "trainer.weight_noise.start_step=3",
    )
    Trainer(config, tmp_path / "straight", show_progress=False).train()

    train_until_crash(Trainer(config, tmp_path / "resumed", show_progress=False), 6)
    assert list_checkpoints(tmp_path / "resumed" / "checkpoints")[-1][0] == 4
    # A new trainer: the noise generator and the average come from the checkpoint at step 4.
    Trainer(config, tmp_path / "resumed", show_progress=False).train()

    straight = load_checkpoint(list_checkpoints(tmp_path / "straight" / "checkpoints")[-1][1])
    resumed = load_checkpoint(list_checkpoints(tmp_path / "resumed" / "checkpoints")[-1][1])
    assert straight["step"] == resumed["step"] == 8
    for key in ("model", "optimizer", "ema", "weight_noise", "rng"):
        assert _equal(straight[key], resumed[key]), key
    # The average is a real average (not the weights), and noise was drawn.
    assert not _equal(straight["ema"], {k: straight["model"][k] for k in straight["ema"]})
    fresh = torch.Generator().manual_seed(config.seed + 0x5EED).get_state()
    assert not torch.equal(straight["weight_noise"]["generator"], fresh)


def test_weight_noise_acts_in_training_from_its_start_step_only(
    bible_cache_dir: Path, tmp_path: Path
) -> None:
    clean = Trainer(tiny_config(bible_cache_dir), tmp_path / "clean", show_progress=False)
    noisy = Trainer(
        tiny_config(
            bible_cache_dir, "trainer.weight_noise.std=0.05", "trainer.weight_noise.start_step=2"
        ),
        tmp_path / "noisy",
        show_progress=False,
    )
    for step in (1, 2, 3):
        indices = next(clean.stream)
        assert next(noisy.stream) == indices
        before = [p.detach().clone() for p in noisy.params]
        dropout_rng = rng_state()  # both updates draw the same dropout masks
        clean_loss = clean.train_step(indices)["loss"]
        set_rng_state(dropout_rng)
        noisy_loss = noisy.train_step(indices)["loss"]
        if step <= 2:
            assert noisy_loss == clean_loss, step
            assert all(torch.equal(a, b) for a, b in zip(clean.params, noisy.params, strict=True))
        else:
            assert noisy_loss != clean_loss
            # The weights moved by one optimizer update, not by noise of std 0.05 (the clean
            # run's update from the same weights has the same size).
            change = max(
                (p - b).abs().max().item() for p, b in zip(noisy.params, before, strict=True)
            )
            assert change < 0.02
    # Eval sees no noise: it draws nothing and gives the same numbers twice.
    generator_state = noisy.weight_noise.generator.get_state()
    first, second = evaluate(noisy.context, "dev", False), evaluate(noisy.context, "dev", False)
    assert first == second
    assert torch.equal(noisy.weight_noise.generator.get_state(), generator_state)


def test_ema_in_training_eval_decode_and_predictor(
    bible_cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decay = 0.8
    config = tiny_config(
        bible_cache_dir,
        f"trainer.ema.decay={decay}",
        "trainer.ema.start_step=2",
        "trainer.use_ema_for_eval=true",
        "trainer.max_steps=4",
    )
    logdir = tmp_path / "log"
    trainer = Trainer(config, logdir, show_progress=False)
    expected = [p.detach().clone() for p in trainer.params]
    for step in range(1, 5):
        trainer.train_step(next(trainer.stream))
        weights = [p.detach() for p in trainer.params]
        if step < 2:
            expected = [w.clone() for w in weights]
        else:
            expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights, strict=True)]
    for average, by_hand in zip(trainer.ema.averages, expected, strict=True):
        assert torch.allclose(average, by_hand, rtol=1e-5, atol=1e-7)

    # In-process eval uses the average and puts the weights back.
    weights = [p.detach().clone() for p in trainer.params]
    raw = evaluate(trainer.context, "dev", show_progress=False)
    with trainer.ema.swapped_in():
        averaged = evaluate(trainer.context, "dev", show_progress=False)
    assert averaged["loss"] != raw["loss"]
    capsys.readouterr()
    trainer.run_evals()
    assert f"eval dev_ema: log_pplx={averaged['log_pplx']:.4g}" in capsys.readouterr().out
    assert all(torch.equal(p, w) for p, w in zip(trainer.params, weights, strict=True))
    trainer.save()
    trainer.summaries.close()

    # seqlab eval follows trainer.use_ema_for_eval; --no-ema evaluates the raw weights.
    assert main(["eval", "--logdir", str(logdir)]) == 0
    assert main(["eval", "--logdir", str(logdir), "--no-ema"]) == 0
    ema_metrics = json.loads((logdir / "eval_dev_ema" / "metrics-00000004.json").read_text())
    raw_metrics = json.loads((logdir / "eval_dev" / "metrics-00000004.json").read_text())
    assert ema_metrics["loss"] == pytest.approx(averaged["loss"], rel=1e-6)
    assert raw_metrics["loss"] == pytest.approx(raw["loss"], rel=1e-6)

    # The Predictor loads the average (by default here, as the config says) or the weights.
    names = [n for n, p in trainer.task.named_parameters() if p.requires_grad]
    predictor = Predictor.from_logdir(logdir)
    loaded = dict(predictor.context.task.named_parameters())
    assert all(torch.equal(loaded[n], a) for n, a in zip(names, trainer.ema.averages, strict=True))
    loaded = dict(Predictor.from_logdir(logdir, use_ema=False).context.task.named_parameters())
    assert all(torch.equal(loaded[n], w) for n, w in zip(names, weights, strict=True))


def test_ema_refused_where_there_is_none(
    bible_cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="use_ema_for_eval needs trainer.ema.decay > 0"):
        Trainer(
            tiny_config(bible_cache_dir, "trainer.use_ema_for_eval=true"),
            tmp_path / "bad",
            show_progress=False,
        )
    logdir = tmp_path / "log"
    trainer = Trainer(tiny_config(bible_cache_dir), logdir, show_progress=False)
    trainer.save()
    trainer.summaries.close()
    assert main(["decode", "--logdir", str(logdir), "--ema"]) == 1
    assert "holds no moving average of the weights" in capsys.readouterr().err
