"""Conformer-CTC end to end: synthesize speech, train the tiny preset, WER falls; infer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqlab.cli import main
from seqlab.core.registry import get_experiment
from seqlab.train.decode_runner import decode_dataset
from seqlab.train.trainer import Trainer


def _config(corpus: dict[str, Path], steps: int):
    config = get_experiment("asr.flite_bible.conformer_ctc_tiny")
    # The dev split is the training manifest: a few steps can only show learning by fitting it.
    config.apply_overrides(
        [
            f"data.cache_dir={corpus['cache']}",
            f"data.train_path={corpus['train']}",
            f"data.dev_path={corpus['train']}",
            f"data.test_path={corpus['test']}",
            f"trainer.max_steps={steps}",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            f"trainer.checkpoint_every_steps={steps}",
            "trainer.num_threads=1",
            "task.spec_augment.num_time_masks=0",
            "task.spec_augment.num_freq_masks=0",
            "task.decoder=greedy",
        ]
    )
    return config


def test_training_lowers_wer_and_infer_transcribes(
    tiny_speech_corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    logdir = tmp_path / "run"
    trainer = Trainer(_config(tiny_speech_corpus, steps=100), logdir, show_progress=False)
    _, untrained = decode_dataset(trainer.context, "dev", show_progress=False)
    trainer.train()
    results, trained = decode_dataset(trainer.context, "dev", show_progress=False)
    # Measured: WER 100 -> about 2, CER 90 -> about 0.3 after 80 steps.
    assert trained["cer"] < untrained["cer"] - 30
    assert trained["wer"] < untrained["wer"] - 30
    assert {"id", "hypothesis", "reference"} <= set(results[0])

    manifest = [json.loads(x) for x in tiny_speech_corpus["train"].read_text().splitlines()]
    wav = tiny_speech_corpus["train"].parent / manifest[0]["audio"]
    assert main(["infer", "--logdir", str(logdir), "--input", str(wav), str(wav)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-2:]
    assert [line.split("\t")[0] for line in lines] == [str(wav), str(wav)]
    assert lines[0] == lines[1]
    decoded = {r["id"]: r["hypothesis"] for r in results}
    assert lines[0].split("\t")[1] == decoded[manifest[0]["id"]]


def test_infer_refuses_text_input_for_speech_model_without_files(
    tiny_speech_corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    logdir = tmp_path / "run"
    Trainer(_config(tiny_speech_corpus, steps=1), logdir, show_progress=False).train()
    assert main(["infer", "--logdir", str(logdir)]) == 2
    assert "--input a.wav" in capsys.readouterr().err
    assert main(["infer", "--logdir", str(logdir), "--input", str(tmp_path / "no.wav")]) == 1
    assert "audio file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name", ["asr.flite_bible.conformer_ctc_tiny", "asr.flite_bible.conformer_ctc_small"]
)
def test_frames_meet_the_positions_at_the_same_scale(
    tiny_speech_corpus: dict[str, Path], name: str
) -> None:
    """At initialisation, the subsampled frames of real speech, as the encoder gets them, are
    about as large as the sinusoidal positions added to them (unscaled they were 6x smaller,
    and training sat on CTC's all-blank plateau)."""
    import torch

    from seqlab.data.audio_files import read_audio
    from seqlab.quant.qat import build_task

    config = get_experiment(name)
    torch.manual_seed(0)
    task = build_task(config.task, config.quant).eval()
    manifest = [json.loads(x) for x in tiny_speech_corpus["train"].read_text().splitlines()]
    audio = torch.from_numpy(
        read_audio(tiny_speech_corpus["train"].parent / manifest[0]["audio"], 16000)
    )[None]
    with torch.no_grad():
        frames, _ = task.featurize(audio, torch.zeros_like(audio))
        positions = task.positions(frames.shape[1])
    ratio = float((frames * task.frame_scale).std() / positions.std())
    assert 0.5 < ratio < 3.0, ratio
