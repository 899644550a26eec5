"""A trained language model fused into a recognizer's runs: `seqlab infer --input x.wav` and
`seqlab decode` use the run's ``task.lm_fusion``; a bad language model run is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seqlab.cli import main
from seqlab.core.config import ConfigError
from seqlab.core.registry import get_experiment
from seqlab.decoding.lm_fusion import LMFusion
from seqlab.export.predictor import Predictor
from seqlab.train.experiment_checks import check_experiment


def _sets(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def _train(experiment: str, logdir: Path, sets: list[str]) -> None:
    args = ["train", "--experiment", experiment, "--logdir", str(logdir)]
    assert main(args + _sets(sets)) == 0


@pytest.fixture(scope="module")
def runs(tiny_speech_corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-step Conformer-CTC run whose config fuses a 20-step character LM trained on the
    transcripts with the recognizer's tokenizer; the LM run; and a wav file."""
    corpus, root = tiny_speech_corpus, tmp_path_factory.mktemp("lm_fusion")
    quick = ["trainer.eval_every_steps=0", "trainer.decode_every_steps=0", "trainer.num_threads=1"]
    data = [f"data.cache_dir={corpus['cache']}", f"data.train_path={corpus['train']}"]
    asr = root / "asr"
    _train(
        "asr.flite_bible.conformer_ctc_tiny",
        asr,
        [
            *quick,
            *data,
            f"data.dev_path={corpus['dev']}",
            f"data.test_path={corpus['test']}",
            "trainer.max_steps=2",
            "trainer.checkpoint_every_steps=2",
        ],
    )
    texts = root / "texts.txt"
    rows = [json.loads(x) for s in ("train", "dev") for x in corpus[s].read_text().splitlines()]
    texts.write_text("".join(f"{r['text']}\n" for r in rows))
    lm = root / "lm"
    _train(
        "lm.bible_en_asr_lm.transformer_tiny",
        lm,
        [
            *quick,
            f"data.cache_dir={corpus['cache']}",
            f"data.train_path={texts}",
            f"data.dev_path={texts}",
            f"data.test_path={texts}",
            f"data.tokenizer.model_path={asr / 'spm.model'}",
            "trainer.max_steps=20",
            "trainer.checkpoint_every_steps=20",
        ],
    )
    manifest = [json.loads(x) for x in corpus["test"].read_text().splitlines()]
    return {"asr": asr, "lm": lm, "wav": corpus["test"].parent / manifest[0]["audio"]}


def test_infer_uses_the_fused_lm_of_the_run(
    runs: dict, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    # The 2-step recognizer emits only blanks; a length bonus makes the LM spell something.
    fuse = [
        f"task.lm_fusion.lm_logdir={runs['lm']}",
        "task.lm_fusion.weight=0.8",
        "task.lm_fusion.length_bonus=5.0",
    ]
    predictor = Predictor.from_logdir(runs["asr"], overrides=fuse)
    fusion = predictor.context.task.fusion()
    assert isinstance(fusion, LMFusion) and fusion.weight == 0.8
    unfused = Predictor.from_logdir(runs["asr"])
    assert unfused.context.task.fusion() is None
    fused_text = predictor.transcribe([runs["wav"]])[0]
    assert fused_text != unfused.transcribe([runs["wav"]])[0]

    wav = str(runs["wav"])
    assert main(["infer", "--logdir", str(runs["asr"]), "--input", wav, *_sets(fuse)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{wav}\t{fused_text}"

    # A run whose config names the language model fuses it without any --set.
    fused_run = tmp_path / "fused_run"
    shutil.copytree(runs["asr"], fused_run)
    config = json.loads((fused_run / "config.json").read_text())
    config["task"]["lm_fusion"].update(lm_logdir=str(runs["lm"]), weight=0.8, length_bonus=5.0)
    (fused_run / "config.json").write_text(json.dumps(config))
    assert main(["infer", "--logdir", str(fused_run), "--input", wav]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{wav}\t{fused_text}"
    # An exported artifact would decode without the language model: refused in one line.
    export = ["export", "--logdir", str(fused_run), "--format", "torch"]
    assert main([*export, "--out", str(tmp_path / "artifact")]) != 0
    err = capsys.readouterr().err
    assert "does not carry the fused language model" in err and "Traceback" not in err


def test_decode_with_a_fused_lm_writes_hypotheses(
    runs: dict, capsys: pytest.CaptureFixture
) -> None:
    fuse = [f"task.lm_fusion.lm_logdir={runs['lm']}", "task.lm_fusion.length_bonus=0.5"]
    args = ["decode", "--logdir", str(runs["asr"]), "--dataset", "dev"]
    assert main(args + _sets(fuse)) == 0
    assert "wer=" in capsys.readouterr().out


def test_a_fused_run_that_is_no_language_model_is_one_line(
    runs: dict, capsys: pytest.CaptureFixture
) -> None:
    wav = str(runs["wav"])
    fuse = [f"task.lm_fusion.lm_logdir={runs['asr']}"]  # a recognizer, not a language model
    assert main(["infer", "--logdir", str(runs["asr"]), "--input", wav, *_sets(fuse)]) == 2
    err = capsys.readouterr().err
    assert "must be a language model" in err and "Traceback" not in err
    fuse = [f"task.lm_fusion.lm_logdir={runs['lm']}x"]
    assert main(["infer", "--logdir", str(runs["asr"]), "--input", wav, *_sets(fuse)]) == 1
    assert f"{runs['lm']}x" in capsys.readouterr().err


def test_las_decodes_with_the_fused_lm(
    runs: dict, tiny_speech_corpus: dict[str, Path], tmp_path: Path
) -> None:
    corpus, las = tiny_speech_corpus, tmp_path / "las"
    sets = [
        f"data.cache_dir={corpus['cache']}",
        f"data.train_path={corpus['train']}",
        f"data.dev_path={corpus['dev']}",
        f"data.test_path={corpus['test']}",
        "trainer.max_steps=1",
        "trainer.checkpoint_every_steps=1",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "trainer.num_threads=1",
    ]
    _train("asr.flite_bible.las_tiny", las, sets)
    fuse = [f"task.lm_fusion.lm_logdir={runs['lm']}", "task.lm_fusion.length_bonus=0.5"]
    unfused = Predictor.from_logdir(las)
    fused = Predictor.from_logdir(las, overrides=fuse)
    assert isinstance(fused.context.task.fusion(), LMFusion)
    text = fused.transcribe([runs["wav"]])[0]
    assert text != unfused.transcribe([runs["wav"]])[0]


def test_training_refuses_a_fused_lm_logdir_that_is_no_run(tmp_path: Path) -> None:
    config = get_experiment("asr.flite_bible.las_tiny")
    config.apply_overrides([f"task.lm_fusion.lm_logdir={tmp_path / 'nothing'}"])
    with pytest.raises(ConfigError, match="task.lm_fusion.lm_logdir=.*not a training logdir"):
        check_experiment(config)
