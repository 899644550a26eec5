"""trainer.keep_best, trainer.early_stop, their score history across resumes, and best.json
of the eval and decode jobs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seqlab.cli import main
from seqlab.core.config import ConfigError
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train import trainer as trainer_module
from seqlab.train.best_scores import update_best_scores
from seqlab.train.checkpoint import list_checkpoints
from seqlab.train.run_status import read_finished
from seqlab.train.score_history import SCORE_HISTORY_FILE, ScoreHistory, ScoreRules
from seqlab.train.trainer import Trainer
from seqlab.train.trainer_config import TrainerConfig

needs_bible = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


def rules(tmp_path: Path, **settings: Any) -> ScoreRules:
    config = TrainerConfig(eval_every_steps=1, decode_every_steps=2)
    config.apply_overrides([f"{k}={v}" for k, v in settings.items()])
    return ScoreRules(config, tmp_path)


def test_best_steps_patience_and_resume_of_the_history(tmp_path: Path) -> None:
    keep = rules(
        tmp_path,
        **{"keep_best.metric": "decode_dev/bleu", "keep_best.count": 2},
        **{"early_stop.metric": "decode_dev/bleu", "early_stop.patience": 3},
        **{"early_stop.min_steps": 5},
    )
    for step, bleu in ((2, 1.0), (4, 3.0), (6, 2.0), (8, 3.0), (10, 2.5)):
        keep.track("eval_dev", step, {"loss": 1.0})  # another job: nothing tracked
        keep.track("decode_dev", step, {"bleu": bleu, "bleu_signature": "x"})
        if step == 8:  # a tie is no improvement: 2 evaluations since the best, of 3
            assert keep.early_stop_reason(step) == ""
    assert keep.best_steps() == {4, 8}  # the earlier of equal scores first
    assert keep.early_stop_reason(10) == (
        "trainer.early_stop: decode_dev/bleu has not improved for 3 evaluations (best 3 at step 4)"
    )
    keep.history.save()
    history = ScoreHistory(tmp_path)
    history.forget_after(6)
    assert history.scores == {"decode_dev/bleu": {2: 1.0, 4: 3.0, 6: 2.0}}
    assert history.evaluations_since_best("decode_dev/bleu", "max") == 1
    assert history.best_steps("decode_dev/bleu", "min", 1) == [2]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"keep_best.metric": "bleu"}, "expected JOB/METRIC, e.g. decode_dev/bleu"),
        ({"keep_best.metric": "decode_test/bleu"}, "it scores: eval_dev, decode_dev"),
        ({"early_stop.metric": "eval_dev/accuracy"}, "set trainer.early_stop.mode=min or max"),
        ({"keep_best.metric": "eval_dev/loss", "keep_best.mode": "lowest"}, "auto, min, max"),
        ({"keep_best.metric": "eval_dev/loss", "keep_best.count": 0}, "count must be >= 1"),
        ({"early_stop.metric": "eval_dev/loss", "early_stop.patience": 0}, "patience must be"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_start(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        rules(tmp_path, **settings)


def test_a_job_without_the_metric_is_a_problem_naming_what_it_reports(tmp_path: Path) -> None:
    keep = rules(tmp_path, **{"keep_best.metric": "eval_dev/bleu"})
    keep.track("eval_dev", 1, {"loss": 2.0, "log_pplx": 2.0, "note": "text"})
    assert str(keep.problem) == (
        "trainer.keep_best.metric='eval_dev/bleu': eval_dev reports no 'bleu'; it reports "
        "log_pplx, loss"
    )


def test_best_json_follows_the_newest_result_of_each_step(tmp_path: Path) -> None:
    for step, bleu, wer in ((1, 2.0, 50.0), (2, 5.0, 40.0), (3, 5.0, 45.0)):
        (tmp_path / f"score-{step:08d}.json").write_text(
            json.dumps({"step": step, "bleu": bleu, "wer": wer, "num_sentences": 9.0})
        )
    assert update_best_scores(tmp_path, "score-*.json") == {
        "bleu": {"step": 2, "value": 5.0, "mode": "max"},
        "wer": {"step": 2, "value": 40.0, "mode": "min"},
    }
    (tmp_path / "score-00000002.json").write_text(json.dumps({"step": 2, "bleu": 1.0}))
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["bleu"]["step"] == 2  # not rewritten until the next result
    assert update_best_scores(tmp_path, "score-*.json")["bleu"] == {
        "step": 3,
        "value": 5.0,
        "mode": "max",
    }


# Scripted dev losses by step: best at 2, no improvement for 3 evaluations by step 5.
LOSSES = {1: 5.0, 2: 3.0, 3: 4.0, 4: 4.5, 5: 4.2, 6: 4.1, 7: 2.0}


def scripted_trainer(
    tiny_mt_trainer: Callable[..., Trainer],
    logdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    *overrides: str,
) -> Trainer:
    trainer = tiny_mt_trainer(
        logdir,
        "trainer.eval_every_steps=1",
        "trainer.checkpoint_every_steps=3",
        "trainer.keep_checkpoints=1",
        "trainer.keep_best.metric=eval_dev/loss",
        "trainer.keep_best.count=1",
        *overrides,
    )

    def scripted(context: Any, dataset: str, show_progress: bool = True) -> dict[str, float]:
        return {"loss": LOSSES[trainer.step], "num_target_tokens": 10.0}

    monkeypatch.setattr(trainer_module, "evaluate", scripted)
    return trainer


@needs_bible
def test_best_checkpoints_survive_rotation_and_early_stop_ends_the_run(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopping = ("trainer.early_stop.metric=eval_dev/loss", "trainer.early_stop.patience=3")
    trainer = scripted_trainer(
        tiny_mt_trainer, tmp_path, monkeypatch, "trainer.max_steps=10", *stopping
    )
    assert trainer.train() == 5
    # Step 2, the best, was saved although checkpoints are due every 3 steps, and kept
    # although keep-last keeps 1; step 5 is the final checkpoint.
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")] == [2, 5]
    reason = (
        "trainer.early_stop: eval_dev/loss has not improved for 3 evaluations (best 3 at step 2)"
    )
    assert trainer.stop_reason == reason
    assert read_finished(tmp_path) == {"step": 5, "reason": reason}
    best = json.loads((tmp_path / "eval_dev" / "best.json").read_text())
    assert best["loss"] == {"step": 2, "value": 3.0, "mode": "min"}

    # A crash after an eval at step 6 left its score; resuming from step 5 scores it again.
    history = json.loads((tmp_path / SCORE_HISTORY_FILE).read_text())
    history["eval_dev/loss"]["6"] = 0.5
    (tmp_path / SCORE_HISTORY_FILE).write_text(json.dumps(history))
    trainer = scripted_trainer(tiny_mt_trainer, tmp_path, monkeypatch, "trainer.max_steps=7")
    assert trainer.train() == 7 and read_finished(tmp_path)["reason"].startswith(
        "trainer.max_steps"
    )
    history = json.loads((tmp_path / SCORE_HISTORY_FILE).read_text())["eval_dev/loss"]
    assert history == {str(step): loss for step, loss in LOSSES.items()}
    # Step 7 is both the newest and the best now: step 2 is no longer kept.
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")] == [7]


@needs_bible
def test_a_metric_the_job_lacks_stops_training_at_the_first_eval_in_one_line(
    bible_cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sets = [
        f"data.cache_dir={bible_cache_dir}",
        "data.train_limit=200",
        "data.eval_limit=4",
        "trainer.max_steps=4",
        "trainer.eval_every_steps=2",
        "trainer.decode_every_steps=0",
        "trainer.keep_best.metric=eval_dev/bleu",
    ]
    args = ["train", "--experiment", "mt.bible_en_es.transformer_tiny", "--logdir", str(tmp_path)]
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("seqlab train: error: trainer.keep_best.metric='eval_dev/bleu': ")
    assert "eval_dev reports no 'bleu'; it reports " in err[-1] and "loss" in err[-1]
    assert not any("Traceback" in line for line in err)


@needs_bible
def test_seqlab_decode_records_the_best_score_per_metric(
    tiny_run_dir: Path, tmp_path: Path
) -> None:
    logdir = tmp_path / "run"
    shutil.copytree(tiny_run_dir, logdir)
    shutil.rmtree(logdir / "decode_dev", ignore_errors=True)
    for step in ("2", "6"):
        assert main(["decode", "--logdir", str(logdir), "--checkpoint", step]) == 0
    scores = {
        step: json.loads((logdir / "decode_dev" / f"score-{step:08d}.json").read_text())
        for step in (2, 6)
    }
    best = json.loads((logdir / "decode_dev" / "best.json").read_text())
    for metric in ("bleu", "chrf"):
        step = max((2, 6), key=lambda s: (scores[s][metric], -s))
        assert best[metric] == {"step": step, "value": scores[step][metric], "mode": "max"}
