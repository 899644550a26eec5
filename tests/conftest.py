"""Fixtures shared across test packages."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

SPEECH_TEXTS = [
    "the lord is my shepherd",
    "I shall not want.",
    "he maketh me to lie down",
    "in green",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip on a machine without an NVIDIA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU visible)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bible_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the tiny Bible runs, so the corpus is prepared once per session;
    ``$SEQLAB_TEST_CACHE_DIR`` names a prepared one instead (a machine without the Debian
    Bible packages, such as the GPU machine of scripts/gpu_check.sh)."""
    prepared = os.environ.get("SEQLAB_TEST_CACHE_DIR")
    return Path(prepared) if prepared else tmp_path_factory.mktemp("bible_cache")


@pytest.fixture()
def manifest_dir(tmp_path: Path) -> Path:
    """A directory with ``train.jsonl``: 12 utterances of noise (0.2 to 0.6 s at 16 kHz,
    ids u0..u11, the four ``SPEECH_TEXTS`` three times), then a 13th line whose audio file
    is missing."""
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(SPEECH_TEXTS * 3):
        seconds = 0.2 + 0.1 * (i % 5)
        soundfile.write(str(tmp_path / f"{i}.wav"), rng.normal(0, 0.1, int(16000 * seconds)), 16000)
        rows.append({"id": f"u{i}", "audio": f"{i}.wav", "text": text})
    rows.append({"id": "bad", "audio": "missing.wav", "text": "x"})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


@pytest.fixture(scope="session")
def two_step_run_sets(bible_cache_dir: Path) -> list[str]:
    """``--set`` values of a quick tiny run: 2 steps on 200 training examples, one thread,
    nothing saved or evaluated before the end (add the task's own settings)."""
    return [
        f"data.cache_dir={bible_cache_dir}",
        "data.train_limit=200",
        "data.eval_limit=4",
        "trainer.max_steps=2",
        "trainer.checkpoint_every_steps=0",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "trainer.num_threads=1",
    ]


@pytest.fixture(scope="session")
def greedy_tiny_logdir(
    two_step_run_sets: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A logdir of transformer_tiny trained 2 steps by ``seqlab train``: greedy decoding of at
    most source length + 3 tokens, so that decoding is fast; 4 dev pairs."""
    from seqlab.cli import main

    logdir = tmp_path_factory.mktemp("greedy_tiny")
    sets = [
        *two_step_run_sets,
        "task.beam_search.beam_size=1",
        "task.beam_search.max_decode_length_ratio=1.0",
        "task.beam_search.max_decode_length_offset=3",
    ]
    args = ["train", "--experiment", "mt.bible_en_es.transformer_tiny", "--logdir", str(logdir)]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    return logdir


@pytest.fixture(scope="session")
def tiny_speech_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """8 training utterances synthesized with flite once per session (flite voices only), 4
    dev, no dev2, 4 test; manifests by split, and the ``cache`` they are in (skipped without
    flite)."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite, or scripts/setup.sh)")
    from seqlab.data.corpora.flite_bible import FliteBibleRequest, prepare_flite_bible

    cache = tmp_path_factory.mktemp("speech_cache")
    request = FliteBibleRequest(
        num_train=8,
        num_dev=4,
        num_dev2=0,
        num_test=4,
        espeak_fraction=0.0,
        festival_fraction=0.0,
        max_words=8,
    )
    paths = prepare_flite_bible(cache / "corpora" / "flite_tiny", request, show_progress=False)
    return paths | {"cache": cache}


@pytest.fixture(scope="session")
def tiny_speech_run(tiny_speech_corpus: dict[str, Path]) -> Callable[[str, Path, list[str]], Path]:
    """``tiny_speech_run(experiment, logdir, sets)``: a 2-step run of a speech experiment on
    the tiny flite corpus (one thread), checkpointed at the end; returns the logdir."""
    from seqlab.cli import main

    def train(experiment: str, logdir: Path, sets: list[str]) -> Path:
        corpus = tiny_speech_corpus
        sets = [
            f"data.cache_dir={corpus['cache']}",
            f"data.train_path={corpus['train']}",
            f"data.dev_path={corpus['dev']}",
            f"data.test_path={corpus['test']}",
            "trainer.max_steps=2",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            "trainer.checkpoint_every_steps=2",
            "trainer.num_threads=1",
            *sets,
        ]
        args = ["train", "--experiment", experiment, "--logdir", str(logdir)]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(args + [a for s in sets for a in ("--set", s)])
        assert code == 0, err.getvalue()
        return logdir

    return train


@pytest.fixture(scope="session")
def ctc_tiny_logdir(
    tiny_speech_run: Callable[[str, Path, list[str]], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """conformer_ctc_tiny trained 2 steps (prefix beam search of 4, the model's decoder)."""
    logdir = tmp_path_factory.mktemp("ctc") / "run"
    sets = ["task.decoder=beam", "task.beam_size=4"]
    return tiny_speech_run("asr.flite_bible.conformer_ctc_tiny", logdir, sets)
