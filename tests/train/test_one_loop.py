"""The one training loop: learning rates per optimizer step, a Trainer from a config that no
registry knows, no import of the distributed package, and checkpoints that load on another
device than the one that wrote them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqlab.core.registry import get_experiment
from seqlab.train.checkpoint import decode_checkpoint, encode_checkpoint, load_checkpoint
from seqlab.train.run_context import TRAINING_DATA_FILE, LogdirError
from seqlab.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_each_optimizer_step_uses_the_schedules_learning_rate(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path, accumulate: int
) -> None:
    steps = 6
    trainer = tiny_mt_trainer(
        tmp_path,
        f"trainer.max_steps={steps}",
        f"trainer.grad_accum_steps={accumulate}",
        "trainer.schedule.warmup_steps=3",
    )
    used: list[float] = []
    step = trainer.optimizer.step

    def recording_step(*args: object, **kwargs: object) -> object:
        used.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step  # type: ignore[method-assign]
    assert trainer.train() == steps
    expected = [trainer.schedule(s) for s in range(1, steps + 1)]
    assert used == expected
    # The schedule really moves over these steps (warm-up, then decay).
    assert len(set(expected)) == steps


UNREGISTERED = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import seqlab.core.registry as registry
    from seqlab.data.mt_data import MTData
    from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer
    from seqlab.layers.embedding import SinusoidalPositions, TokenEmbedding
    from seqlab.layers.transformer import decoder_config, encoder_config
    from seqlab.models.mt.transformer_model import TransformerMT
    from seqlab.train.experiment import ExperimentConfig
    from seqlab.train.trainer import Trainer
    from seqlab.train.trainer_config import TrainerConfig

    data_dir, logdir, max_steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    layers = dict(num_layers=1, model_dim=32, num_heads=2, hidden_dim=64, dropout_prob=0.0)
    config = ExperimentConfig(
        name="my_notebook_experiment",
        task=TransformerMT.Config(
            embedding=TokenEmbedding.Config(vocab_size=40, model_dim=32),
            positions=SinusoidalPositions.Config(model_dim=32, max_length=256),
            encoder=encoder_config(**layers),
            decoder=decoder_config(**layers),
        ),
        data=MTData.Config(
            corpus="",
            cache_dir=str(data_dir / "cache"),
            train_path=str(data_dir / "train.tsv"),
            dev_path=str(data_dir / "dev.tsv"),
            test_path=str(data_dir / "dev.tsv"),
            tokenizer=SentencePieceTokenizer.Config(vocab_size=40),
            max_tokens=256,
        ),
        trainer=TrainerConfig(
            max_steps=max_steps,
            checkpoint_every_steps=2,
            eval_every_steps=0,
            decode_every_steps=0,
            log_every_steps=1,
        ),
    )
    trainer = Trainer(config, logdir, show_progress=False)
    step = trainer.train()
    experiments = [m for m in sys.modules if m.startswith("seqlab.experiments")]
    print(f"step={step} registry_loaded={registry._loaded} experiments={experiments}")
    """
)


def _write_pairs(path: Path, count: int) -> None:
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    numbers = ["uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "diez"]
    lines = []
    for i in range(count):
        a, b = i % 10, (i * 7 + 3) % 10
        lines.append(f"{words[a]} and {words[b]}\t{numbers[a]} y {numbers[b]}\n")
    path.write_text("".join(lines))


def test_a_trainer_from_an_unregistered_config_trains_checkpoints_and_resumes(
    tmp_path: Path,
) -> None:
    _write_pairs(tmp_path / "train.tsv", 300)
    _write_pairs(tmp_path / "dev.tsv", 20)
    script = tmp_path / "notebook.py"
    script.write_text(UNREGISTERED)
    logdir = tmp_path / "run"

    def run(max_steps: int) -> str:
        out = subprocess.run(
            [sys.executable, str(script), str(tmp_path), str(logdir), str(max_steps)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    first = run(4)
    assert "step=4 registry_loaded=False experiments=[]" in first, first
    assert (logdir / "checkpoints" / "ckpt-00000004.pt").exists()
    assert (logdir / "config.txt").exists() and not (logdir / "config_diff.txt").exists()
    second = run(6)
    assert "resumed from" in second and "at step 4" in second, second
    assert "step=6 registry_loaded=False" in second, second
    assert load_checkpoint(logdir / "checkpoints" / "ckpt-00000006.pt")["step"] == 6


def test_importing_the_trainer_imports_nothing_distributed() -> None:
    code = (
        "import sys, seqlab.train.trainer; "
        "print(sorted(m for m in sys.modules if m.startswith(('seqlab.distributed', "
        "'seqlab.experiments'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save records each storage's device; a file written on a GPU names cuda:0. Such a
    file (written here by tagging CPU storages as cuda:0) must load on a machine without
    CUDA, where a plain torch.load fails."""
    trainer = tiny_mt_trainer(tmp_path / "run", "trainer.max_steps=2")
    trainer.train()
    path = trainer.save()
    payload = load_checkpoint(path)
    tensors = [v for v in payload["model"].values()]
    assert tensors and all(t.device.type == "cpu" for t in tensors)

    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    raw = encode_checkpoint(payload)
    monkeypatch.undo()
    gpu_file = tmp_path / "from_gpu.pt"
    gpu_file.write_bytes(raw)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            _plain_load(raw)  # what a loader without map_location would do
    loaded = decode_checkpoint(raw, gpu_file)
    assert all(v.device.type == "cpu" for v in loaded["model"].values())
    for name, tensor in payload["model"].items():
        assert torch.equal(loaded["model"][name], tensor), name

    # And a trainer resumes from it on the CPU.
    resumed = tiny_mt_trainer(tmp_path / "resumed", "trainer.max_steps=3")
    resumed.context.checkpoint_dir.mkdir(parents=True)
    (resumed.context.checkpoint_dir / path.name).write_bytes(raw)
    assert resumed.train() == 3


def _plain_load(raw: bytes) -> object:
    """torch.load of the checkpoint's payload without a map_location."""
    import hashlib
    import io

    from seqlab.train.checkpoint import MAGIC

    data = raw[len(MAGIC) + hashlib.sha256().digest_size :]
    return torch.load(io.BytesIO(data), weights_only=True)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_crash_mid_epoch_resumes_exactly_with_batches_made_ahead(
    tiny_mt_trainer: Callable[..., Trainer],
    train_until_crash: Callable[[Trainer, int], None],
    tmp_path: Path,
    prefetch: int,
) -> None:
    """The checkpoint holds the stream position of the last batch trained on, not of the
    batches the prefetcher made ahead; the training pairs are read from their shards."""
    settings = [
        "trainer.max_steps=9",
        "trainer.checkpoint_every_steps=4",
        f"trainer.prefetch_batches={prefetch}",
    ]
    whole = tiny_mt_trainer(tmp_path / "whole", *settings)
    assert whole.examples.shards is not None  # memory-mapped training pairs
    whole.train()
    crashed = tiny_mt_trainer(tmp_path / "crashed", *settings)
    train_until_crash(crashed, 6)
    assert load_checkpoint(crashed.context.checkpoint_dir / "ckpt-00000004.pt")["data_stream"] == {
        "epoch": 0,
        "index": 4,
    }
    resumed = tiny_mt_trainer(tmp_path / "crashed", *settings)
    assert resumed.train() == 9
    for name, tensor in whole.task.state_dict().items():
        assert torch.equal(resumed.task.state_dict()[name], tensor), name
    assert resumed.stream.state_dict() == whole.stream.state_dict()


def test_resuming_after_the_training_file_changed_is_refused(
    tiny_mt_trainer: Callable[..., Trainer], bible_cache_dir: Path, tmp_path: Path
) -> None:
    tiny_mt_trainer(tmp_path / "prepare", "trainer.max_steps=1")  # prepares the corpus
    bible = bible_cache_dir / "corpora" / "bible_en_es" / "train.tsv"
    mine = tmp_path / "my_train.tsv"
    mine.write_text("".join(bible.read_text().splitlines(keepends=True)[:300]))
    run = tmp_path / "run"
    trainer = tiny_mt_trainer(run, f"data.train_path={mine}", "trainer.max_steps=2")
    assert trainer.train() == 2
    recorded = json.loads((run / TRAINING_DATA_FILE).read_text())
    assert recorded["sources"][0]["path"] == str(mine.resolve())
    with mine.open("a") as f:
        f.write("And it was so.\tY fue así.\n")
    with pytest.raises(LogdirError) as info:
        tiny_mt_trainer(run, f"data.train_path={mine}", "trainer.max_steps=3")
    message = str(info.value)
    assert f"{mine.resolve()} changed" in message and "new --logdir" in message
    assert "\n" not in message


def test_a_log_file_gets_plain_lines_and_evaluation_time_is_not_training_time(
    bible_cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Output that is not a terminal (pytest's capture here, a job's log file in use) gets one
    plain line per log interval instead of bar updates; a decode between two log lines does
    not count towards that window's tokens/s."""
    config = get_experiment("mt.bible_en_es.transformer_tiny")
    config.apply_overrides(
        [
            f"data.cache_dir={bible_cache_dir}",
            "data.train_limit=200",
            "data.max_tokens=256",
            "trainer.max_steps=8",
            "trainer.log_every_steps=2",
            "trainer.checkpoint_every_steps=0",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=3",
        ]
    )
    trainer = Trainer(config, tmp_path, show_progress=True)
    assert not trainer.show_bars
    trainer.run_decodes = lambda: time.sleep(2.0)  # type: ignore[method-assign]
    trainer.train()
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("[seqlab] step ")]
    assert [line.split()[2] for line in lines] == ["2/8", "4/8", "6/8", "8/8"], out
    assert all("loss=" in line and "tokens/s=" in line and "eta=" in line for line in lines)
    assert "\r" not in err  # no bar updates in a log file
    events = EventAccumulator(str(tmp_path / "train"))
    events.Reload()
    rates = [e.value for e in events.Scalars("steps_per_second")]
    # The windows holding a 2 s "decode" (after steps 3 and 6) run at the others' pace.
    assert min(rates) > 2 / 2.0, rates
