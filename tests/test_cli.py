"""The seqlab command: list, inspect, and its error messages for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from seqlab.cli import main


def test_list_names_every_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    names = capsys.readouterr().out.split()
    assert "mt.bible_en_es.transformer_small" in names
    assert "mt.bible_en_es.transformer_base" in names


def test_inspect_prints_config_diff_and_parameter_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "inspect",
            "--experiment",
            "mt.bible_en_es.transformer_tiny",
            "--set",
            "trainer.max_steps=7",
            "--set",
            "task.beam_search.beam_size=2",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "\ntask.encoder.num_layers = 2\n" in out
    assert "trainer.max_steps: 200 -> 7\n" in out
    assert "task.beam_search.beam_size: 4 -> 2\n" in out
    total = [line for line in out.splitlines() if line.startswith("total")]
    assert total and int(total[0].split()[-1].replace(",", "")) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "task.encoder.num_layer=2"],
            "unknown key 'task.encoder.num_layer'; did you mean 'task.encoder.num_layers'?",
        ),
        (["--set", "trainer.max_steps=ten"], "'trainer.max_steps' expects an int, got 'ten'"),
        (["--set", "trainer.max_steps"], "must look like 'a.b.c=value'"),
        (["--set", "task.encoder=3"], "is a config section"),
    ],
)
def test_bad_overrides_get_one_clear_error(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["inspect", "--experiment", "mt.bible_en_es.transformer_tiny", *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_unknown_experiment_lists_close_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--experiment", "mt.bible_en_es.transformer_smal"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'mt.bible_en_es.transformer_smal'" in err
    assert "mt.bible_en_es.transformer_small" in err


def test_decode_on_a_logdir_without_training_says_what_to_run(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", "--logdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "seqlab train --experiment NAME" in err


def test_text_models_need_no_speech_packages() -> None:
    """The GPU machine of scripts/gpu_check.sh lacks soundfile and jiwer: seqlab imports them
    only where speech models use them."""
    code = (
        "import sys\n"
        "for name in ('soundfile', 'jiwer', 'scipy', 'scipy.signal'):\n"
        "    sys.modules[name] = None  # any import of them fails\n"
        "from seqlab.core.registry import get_experiment, list_experiments\n"
        "assert len(list_experiments()) > 10\n"
        "import seqlab.train.trainer, seqlab.export.predictor, seqlab.cli\n"
        "get_experiment('mt.bible_en_es.transformer_tiny').task.build()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [],
            "name the corpora to prepare (bible_en, bible_en_asr_lm, bible_en_es, flite_bible) "
            "or pass --all",
        ),
        (["bible_en", "--all"], "or pass --all, not both"),
        (["bible_en", "nosuch"], "unknown corpus 'nosuch'; built-in corpora: bible_en, "),
        (["--all", "--experiment", "lm.bible_en.lstm_tiny"], "or --experiment, not both"),
    ],
)
def test_data_prepare_needs_corpus_names_or_all(
    args: list[str], message: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No argument prepares nothing (every corpus is 1 GB with speech): it asks which."""
    assert main(["data", "prepare", *args, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "seqlab data: error: " in err and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_data_prepare_help_lists_the_corpora(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "the corpora to prepare: bible_en, bible_en_asr_lm, bible_en_es, flite_bible" in out
    assert "--all prepare every corpus" in out
