"""Decisions by a dev metric: keep the best checkpoints (``trainer.keep_best``) and stop early
(``trainer.early_stop``).

A metric is named ``JOB/METRIC``, the job as its directory in the logdir and the metric as
in its results: ``decode_dev/bleu``, ``eval_dev/loss`` (``decode_dev_ema/bleu`` when
``trainer.use_ema_for_eval``). The trainer records each value of the metrics it tracks in
``<logdir>/score_history.json`` (step -> value), which survives resume; scores of steps past
the checkpoint a run resumes from are dropped (those steps are scored again).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqlab.core.atomic_files import write_atomic
from seqlab.core.config import Config, ConfigError, param
from seqlab.train.best_scores import METRIC_MODES, MODES, is_better, score_value
from seqlab.train.ema import EMA_JOB_SUFFIX

if TYPE_CHECKING:
    from seqlab.train.trainer_config import TrainerConfig

SCORE_HISTORY_FILE = "score_history.json"


@dataclasses.dataclass
class TrackedMetric(Config):
    """A dev metric scored during training, and which way is better."""

    metric: str = param(
        "",
        doc="JOB/METRIC scored by the periodic eval or decode, e.g. decode_dev/bleu or "
        "eval_dev/loss ('' = off).",
    )
    mode: str = param(
        "auto",
        doc="max (higher is better), min, or auto: max for bleu and chrf; min for loss, "
        "log_pplx, pplx, wer and cer.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.metric)

    def resolved_mode(self, key: str) -> str:
        """min or max; ``key`` (e.g. trainer.keep_best) names this config in errors."""
        if self.mode in MODES:
            return self.mode
        name = self.metric.rpartition("/")[2]
        if self.mode == "auto" and name in METRIC_MODES:
            return METRIC_MODES[name]
        if self.mode != "auto":
            raise ConfigError(f"{key}.mode={self.mode!r}; expected one of auto, min, max")
        raise ConfigError(
            f"{key}.mode=auto does not know whether '{name}' is better higher or lower; "
            f"set {key}.mode=min or max"
        )

    def check(self, key: str, jobs: list[str]) -> None:
        """Raises ConfigError unless the metric is JOB/METRIC of a job in ``jobs`` (those the
        run scores periodically), with a known or given mode."""
        job, _, name = self.metric.partition("/")
        if not name or not job:
            raise ConfigError(
                f"{key}.metric={self.metric!r}; expected JOB/METRIC, e.g. decode_dev/bleu or "
                f"eval_dev/loss"
            )
        if job not in jobs:
            scored = ", ".join(jobs) or "none (eval_every_steps and decode_every_steps are 0)"
            raise ConfigError(
                f"{key}.metric={self.metric!r}: training scores no job '{job}'; it scores: {scored}"
            )
        self.resolved_mode(key)


@dataclasses.dataclass
class KeepBestConfig(TrackedMetric):
    """Checkpoints that keep-last rotation (``trainer.keep_checkpoints``) never deletes."""

    count: int = param(
        3,
        doc="Keep the checkpoints of the best this many scores of the metric; a scored step "
        "among them without a checkpoint gets one.",
    )


@dataclasses.dataclass
class EarlyStopConfig(TrackedMetric):
    """Stop training when a dev metric stops improving."""

    patience: int = param(
        5, doc="Stop once this many evaluations in a row have not beaten the best score."
    )
    min_steps: int = param(0, doc="Never stop early before this step.")


class ScoreHistory:
    """The values of the tracked metrics by step, kept in ``<logdir>/score_history.json``."""

    def __init__(self, logdir: Path) -> None:
        self.path = logdir / SCORE_HISTORY_FILE
        self.scores: dict[str, dict[int, float]] = {}
        if self.path.is_file():
            try:
                raw = json.loads(self.path.read_text())
                self.scores = {m: {int(s): float(v) for s, v in d.items()} for m, d in raw.items()}
            except (ValueError, TypeError, AttributeError) as e:
                raise ConfigError(f"{self.path} is not a score history ({e}); remove it") from None

    def forget_after(self, step: int) -> None:
        """Drops the scores of steps past ``step`` (the step a run resumes from)."""
        self.scores = {m: {s: v for s, v in d.items() if s <= step} for m, d in self.scores.items()}

    def add(self, metric: str, step: int, value: float) -> None:
        self.scores.setdefault(metric, {})[step] = value

    def save(self) -> None:
        data = {m: {str(s): v for s, v in sorted(d.items())} for m, d in self.scores.items()}
        write_atomic(self.path, (json.dumps(data, indent=1) + "\n").encode())

    def best_steps(self, metric: str, mode: str, count: int) -> list[int]:
        """The steps of the best ``count`` scores of ``metric`` (the earlier on a tie)."""
        ranked = sorted(
            self.scores.get(metric, {}).items(),
            key=lambda item: (-item[1] if mode == "max" else item[1], item[0]),
        )
        return [step for step, _ in ranked[: max(count, 0)]]

    def evaluations_since_best(self, metric: str, mode: str) -> int:
        """How many scores of ``metric`` came after its best one (the first best on a tie)."""
        best_value: float | None = None
        since = 0
        for _, value in sorted(self.scores.get(metric, {}).items()):
            if best_value is None or is_better(value, best_value, mode):
                best_value, since = value, 0
            else:
                since += 1
        return since


def tracked_value(key: str, metric: str, job: str, results: dict[str, Any]) -> float | None:
    """The value of ``metric`` (JOB/METRIC) in ``results`` of ``job``; None for another job,
    or a value that is not finite.

    Raises:
      ConfigError: the job ran but reports no such metric; names those it reports.
    """
    wanted_job, _, name = metric.partition("/")
    if wanted_job != job:
        return None
    if isinstance(results.get(name), float):
        return score_value(results[name])  # None for a NaN or infinite score: not recorded
    value = score_value(results.get(name))
    if value is None:
        reported = ", ".join(k for k, v in sorted(results.items()) if score_value(v) is not None)
        raise ConfigError(
            f"{key}.metric={metric!r}: {job} reports no '{name}'; it reports {reported}"
        )
    return value


class ScoreRules:
    """``trainer.keep_best`` and ``trainer.early_stop`` of a run, over its ScoreHistory."""

    def __init__(self, config: TrainerConfig, logdir: Path) -> None:
        """Checks the rules against the jobs ``config`` scores periodically.

        Raises:
          ConfigError: a metric not named JOB/METRIC, of a job training does not run, with
            an unknown direction, or a count or patience below 1.
        """
        self.keep_best = config.keep_best
        self.early_stop = config.early_stop
        self.rules = {
            key: rule
            for key, rule in (
                ("trainer.keep_best", config.keep_best),
                ("trainer.early_stop", config.early_stop),
            )
            if rule.enabled
        }
        jobs = scored_jobs(config)
        for key, rule in self.rules.items():
            rule.check(key, jobs)
        if self.keep_best.enabled and self.keep_best.count < 1:
            raise ConfigError(f"trainer.keep_best.count must be >= 1, got {self.keep_best.count}")
        if self.early_stop.enabled and self.early_stop.patience < 1:
            raise ConfigError(
                f"trainer.early_stop.patience must be >= 1, got {self.early_stop.patience}"
            )
        self.history = ScoreHistory(logdir)
        # The first tracked metric missing from the results of a job that ran, if any.
        self.problem: ConfigError | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.rules)

    def track(self, job: str, step: int, results: dict[str, Any]) -> None:
        """Records ``step``'s value of each tracked metric that ``job``'s ``results`` hold; a
        missing one is kept in ``problem``."""
        for key, rule in self.rules.items():
            try:
                value = tracked_value(key, rule.metric, job, results)
            except ConfigError as e:
                self.problem = self.problem or e
                continue
            if value is not None:
                self.history.add(rule.metric, step, value)

    def best_steps(self) -> set[int]:
        """The steps whose checkpoints keep-last rotation spares."""
        rule = self.keep_best
        if not rule.enabled:
            return set()
        mode = rule.resolved_mode("trainer.keep_best")
        return set(self.history.best_steps(rule.metric, mode, rule.count))

    def early_stop_reason(self, step: int) -> str:
        """Why training stops at ``step`` by ``trainer.early_stop``, or "" to go on."""
        rule = self.early_stop
        if not rule.enabled or step < rule.min_steps:
            return ""
        mode = rule.resolved_mode("trainer.early_stop")
        since = self.history.evaluations_since_best(rule.metric, mode)
        if since < rule.patience:
            return ""
        best = self.history.best_steps(rule.metric, mode, 1)[0]
        value = self.history.scores[rule.metric][best]
        return (
            f"trainer.early_stop: {rule.metric} has not improved for {since} evaluations "
            f"(best {value:.4g} at step {best})"
        )


def scored_jobs(config: TrainerConfig) -> list[str]:
    """The eval and decode jobs training runs periodically, as named in the logdir."""
    suffix = EMA_JOB_SUFFIX if config.use_ema_for_eval else ""
    jobs = []
    if config.eval_every_steps > 0:
        jobs += [f"eval_{dataset}{suffix}" for dataset in config.eval_datasets]
    if config.decode_every_steps > 0:
        jobs += [f"decode_{dataset}{suffix}" for dataset in config.decode_datasets]
    return jobs
