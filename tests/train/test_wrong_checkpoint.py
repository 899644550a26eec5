"""Checkpoints of the wrong model or the wrong version: refused in one line naming the file
and the first mismatching parameter, never loaded in part, never deleted or changed, and
never silently replaced by an older checkpoint of the same logdir."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from seqlab.cli import main
from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.export.predictor import Predictor
from seqlab.train.checkpoint import (
    FORMAT_VERSION,
    MAGIC,
    CheckpointError,
    IncompatibleCheckpointError,
    checkpoint_path,
    encode_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from seqlab.train.checkpoint_fit import load_model_state

TINY = "mt.bible_en_es.transformer_tiny"
RNMT = "mt.bible_en_es.rnmt_tiny"
EXAMPLES = 40
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

torch.manual_seed(0)
MODEL = get_experiment(TINY).task.build()
STATE = {k: v.clone() for k, v in MODEL.state_dict().items()}
NAMES = list(STATE)
CONFIG = get_experiment(TINY).to_dict()


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes)."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def model_unchanged() -> bool:
    return all(torch.equal(v, STATE[k]) for k, v in MODEL.state_dict().items())


# ---- another model's weights -----------------------------------------------------------------


@st.composite
def changed_states(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    """The tiny model's weights with 1-3 random changes: a shape, a renamed, dropped or extra
    key, or a value that is not a tensor."""
    state = dict(STATE)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["shape", "rename", "drop", "extra", "not_tensor"]))
        name = draw(st.sampled_from(sorted(state)))
        if kind == "shape":
            value = state[name]  # a tensor, unless an earlier change replaced it
            shape = list(value.shape) if isinstance(value, torch.Tensor) else []
            how = draw(st.sampled_from(["resize", "add_dim", "drop_dim"]))
            if how == "resize" or (how == "drop_dim" and not shape):
                i = draw(st.integers(0, max(len(shape) - 1, 0)))
                if shape:
                    shape[i] = draw(st.integers(0, 200).filter(lambda n, s=shape[i]: n != s))
                else:
                    shape = [draw(st.integers(2, 5))]
            elif how == "add_dim":
                shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(2, 3)))
            else:
                shape.pop(draw(st.integers(0, len(shape) - 1)))
            state[name] = torch.zeros(shape)
        elif kind == "rename":
            suffix = draw(st.sampled_from(["_old", "s", ".weight", "x"]))
            state[name + suffix] = state.pop(name)
        elif kind == "drop":
            del state[name]
        elif kind == "extra":
            state[f"{name.rsplit('.', 1)[0]}.extra_{draw(st.integers(0, 9))}"] = torch.zeros(2)
        else:
            state[name] = draw(st.sampled_from([None, 1.5, "weights", [1, 2]]))
    return state


def expected_first_problem(state: dict) -> str:
    """The parameter the message must name: the first of the model's own parameters that is
    missing, not a tensor or of another shape, else the first extra one of the checkpoint."""
    for name, tensor in STATE.items():
        value = state.get(name)
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            return name
    return next(name for name in state if name not in STATE)


def shape_text(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(str(n) for n in tensor.shape) + "]"


@SETTINGS
@given(state=changed_states())
@example(state={**STATE, "embedding.weight": torch.zeros(2000, 64)})
@example(state={k: v for k, v in STATE.items() if k != NAMES[-1]})
@example(state={**STATE, "decoder.layers.2.ffn.weight": torch.zeros(3)})
def test_changed_weights_are_refused_naming_the_first_mismatch(state: dict) -> None:
    if all(isinstance(v, torch.Tensor) for v in state.values()) and {
        k: v.shape for k, v in state.items()
    } == {k: v.shape for k, v in STATE.items()}:
        return  # the changes cancelled out
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = save_checkpoint(directory, 5, {"model": state, "config": CONFIG}, keep=0)
        before = snapshot(directory)
        payload = load_checkpoint(path)
        with pytest.raises(IncompatibleCheckpointError) as info:
            load_model_state(MODEL, payload["model"], path, payload["config"])
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"checkpoint {path} is from another model: "), message
        name = expected_first_problem(state)
        assert f"'{name}'" in message
        first = message.split(" (and ")[0]
        assert [m for m in re.findall(r"'([^']+)'", first)] == [name], message
        value = state.get(name)
        if isinstance(value, torch.Tensor) and name in STATE:
            assert f"shape {shape_text(value)} in the checkpoint" in message
            assert f"{shape_text(STATE[name])} in this model" in message
        assert "trained as" not in message  # same model class
        assert model_unchanged()
        assert snapshot(directory) == before


def test_other_model_class_is_named() -> None:
    rnmt = get_experiment(RNMT)
    state = rnmt.task.build().state_dict()
    with pytest.raises(IncompatibleCheckpointError) as info:
        load_model_state(MODEL, state, Path("ckpt-00000009.pt"), rnmt.to_dict())
    message = str(info.value)
    assert message.startswith("checkpoint ckpt-00000009.pt is from another model: parameter '")
    assert "it was trained as RNMTPlusMT, this run builds TransformerMT" in message
    assert model_unchanged()


def test_fitting_weights_load() -> None:
    torch.manual_seed(1)
    other = get_experiment(TINY).task.build()
    target = get_experiment(TINY).task.build()
    load_model_state(target, other.state_dict(), Path("x.pt"), CONFIG)
    assert all(
        torch.equal(a, b)
        for a, b in zip(target.state_dict().values(), other.state_dict().values(), strict=True)
    )


# ---- another version, or not a seqlab checkpoint ---------------------------------------------


def wrap(data: bytes) -> bytes:
    return MAGIC + hashlib.sha256(data).digest() + data


VERSIONS = st.one_of(
    st.integers(-(2**40), 2**40).filter(lambda v: v != FORMAT_VERSION),
    st.sampled_from([None, "1", 1.0, True, "2.0", [1], torch.ones(3, 3)]),
)


@SETTINGS
@given(version=VERSIONS, with_version=st.booleans())
@example(version=2, with_version=True)
@example(version=FORMAT_VERSION + 1000, with_version=True)
def test_other_format_versions_are_refused_without_falling_back(
    version: object, with_version: bool
) -> None:
    payload = {"step": 9, "model": {}}
    if with_version:
        payload["format_version"] = version
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        save_checkpoint(directory, 3, {"model": STATE}, keep=0)  # an older, good one
        path = checkpoint_path(directory, 9)
        path.write_bytes(wrap(buffer.getvalue()))
        before = snapshot(directory)
        for load in (lambda: load_checkpoint(path), lambda: load_latest_checkpoint(directory)):
            with pytest.raises(IncompatibleCheckpointError) as info:
                load()
            message = str(info.value)
            assert message.startswith(f"checkpoint {path} has format version "), message
            assert f"this seqlab reads version {FORMAT_VERSION}" in message
            assert "\n" not in message
            newer = type(version) is int and version > FORMAT_VERSION and with_version
            assert ("newer seqlab" in message) == newer, message
            if newer:
                assert f"format version {version}," in message
        assert snapshot(directory) == before


@st.composite
def foreign_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["header", "torch", "bytes", "text"]))
    if kind == "header":
        number = draw(st.integers(0, 10**6).filter(lambda n: n != FORMAT_VERSION))
        return f"SEQLAB-CKPT-{number}\n".encode() + draw(st.binary(max_size=64))
    if kind == "torch":
        buffer = io.BytesIO()
        torch.save(draw(st.sampled_from([STATE, {"x": 1}, torch.zeros(2)])), buffer)
        return buffer.getvalue()
    if kind == "text":
        return draw(st.text(max_size=64)).encode()
    return draw(st.binary(max_size=200))


@SETTINGS
@given(data=foreign_files())
@example(data=b"SEQLAB-CKPT-2\n" + b"\0" * 100)
@example(data=b"")
@example(data=MAGIC)
def test_files_that_are_not_seqlab_checkpoints_are_refused_and_kept(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        good = save_checkpoint(directory, 3, {"model": STATE}, keep=0)
        path = checkpoint_path(directory, 9)
        path.write_bytes(data)
        before = snapshot(directory)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        header = re.match(rb"SEQLAB-CKPT-(\d+)\n", data)
        if MAGIC.startswith(data) or data.startswith(MAGIC):  # this format, cut short
            assert "truncated" in message
        elif header:
            assert f"has file format {int(header.group(1))}" in message
        elif data.startswith(b"PK\x03\x04"):
            assert "plain torch.save file" in message
        else:
            assert "is not a seqlab checkpoint" in message
        # Such a file is skipped like a corrupt one (its header cannot tell a newer seqlab
        # from a flipped bit), and kept.
        assert load_latest_checkpoint(directory)[0] == good
        assert snapshot(directory) == before


# ---- seqlab train / decode / infer on a logdir whose newest checkpoint is another model ----

needs_bible = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


def train_args(experiment: str, logdir: Path, cache_dir: Path, *overrides: str) -> list[str]:
    sets = [
        f"data.cache_dir={cache_dir}",
        "data.train_limit=200",
        "data.eval_limit=4",
        "trainer.max_steps=2",
        "trainer.checkpoint_every_steps=1",
        "trainer.keep_checkpoints=0",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "trainer.num_threads=1",
        "task.beam_search.beam_size=1",
        *overrides,
    ]
    args = ["train", "--experiment", experiment, "--logdir", str(logdir)]
    return args + [a for s in sets for a in ("--set", s)]


def run(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def runs(bible_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two finished 2-step runs: transformer_tiny and rnmt_tiny."""
    root = tmp_path_factory.mktemp("wrong_checkpoint")
    logdirs = {"tiny": root / "tiny", "rnmt": root / "rnmt"}
    for key, experiment in (("tiny", TINY), ("rnmt", RNMT)):
        code, err = run(train_args(experiment, logdirs[key], bible_cache_dir))
        assert code == 0, err
    return logdirs


def one_line_error(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"seqlab {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@needs_bible
@pytest.mark.parametrize(
    "case", ["other_class", "more_layers", "other_vocab", "newer_version", "plain_torch"]
)
def test_train_refuses_a_logdir_whose_newest_checkpoint_does_not_fit(
    runs: dict[str, Path],
    bible_cache_dir: Path,
    tmp_path: Path,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    logdir = tmp_path / "log"
    shutil.copytree(runs["tiny"], logdir)
    directory = logdir / "checkpoints"
    newest = checkpoint_path(directory, 3)
    experiment, overrides = TINY, []
    if case == "other_class":  # the newest checkpoint comes from an RNMT+ run
        shutil.copy(list_checkpoints(runs["rnmt"] / "checkpoints")[-1][1], newest)
    elif case == "newer_version":
        newest.write_bytes(encode_checkpoint({"format_version": FORMAT_VERSION + 1, "step": 3}))
    elif case == "plain_torch":  # someone saved a raw state dict under a checkpoint's name
        torch.save(STATE, newest)
        overrides = ["trainer.max_steps=4"]
    elif case == "more_layers":  # this run asks for another shape than the logdir holds
        overrides, newest = ["task.encoder.num_layers=3"], checkpoint_path(directory, 2)
    else:  # and the tokenizer too: another vocabulary
        overrides = ["task.embedding.vocab_size=1200", "data.tokenizer.vocab_size=1200"]
        newest = checkpoint_path(directory, 2)
    before = snapshot(logdir)
    code, err = run(train_args(experiment, logdir, bible_cache_dir, *overrides))
    if case == "plain_torch":  # not a checkpoint: skipped like a corrupt file, and kept
        assert code == 0, err
        warning = f"{newest} is not a seqlab checkpoint: it does not start with SEQLAB-CKPT-1"
        assert warning in caplog.text and "plain torch.save" in caplog.text
        # Training from step 2 saved its own step 3; the foreign file got a second name.
        assert load_checkpoint(newest)["step"] == 3
        kept = newest.with_name(newest.name + ".replaced-1")
        assert kept.read_bytes() == before[str(newest.relative_to(logdir))]
        assert f"kept it as {kept.name}" in caplog.text
        assert [step for step, _ in list_checkpoints(directory)] == [1, 2, 3, 4]
        return
    if case in ("more_layers", "other_vocab"):
        # The logdir's config.json says what its checkpoints hold: the changed config key is
        # refused before any data is prepared or checkpoint read (seqlab.train.config_changes).
        assert code == 2, err
        line = one_line_error(err, "train")
        held = f"changes the model that the checkpoints in {directory} hold (parameter '"
        assert held in line and "set it back to resume this run, or train in a new" in line
        if case == "more_layers":
            assert "task.encoder.num_layers: 2 -> 3 changes" in line
            assert "parameter 'encoder.layers.2." in line and "': absent -> [" in line
        else:  # the tokenizer's size is no model key: only the embedding's is named
            assert line.startswith("seqlab train: error: task.embedding.vocab_size: 1000 -> 1200")
            assert "parameter 'embedding.weight': [1000, 64] -> [1200, 64])" in line
        assert snapshot(logdir) == before
        return
    assert code == 1, err
    line = one_line_error(err, "train")
    if case == "newer_version":
        assert f"checkpoint {newest} has format version {FORMAT_VERSION + 1}" in line
        assert "upgrade seqlab" in line
    else:
        assert f"checkpoint {newest} is from another model: " in line
        assert "train this config in a new --logdir" in line
    if case == "other_class":
        assert "trained as RNMTPlusMT, this run builds TransformerMT" in line
    # Nothing in the logdir changed: no checkpoint written or removed, config files kept.
    assert snapshot(logdir) == before


@needs_bible
def test_decode_infer_and_predictor_refuse_another_models_checkpoint(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    logdir = tmp_path / "log"
    shutil.copytree(runs["tiny"], logdir)
    newest = checkpoint_path(logdir / "checkpoints", 3)
    shutil.copy(list_checkpoints(runs["rnmt"] / "checkpoints")[-1][1], newest)
    before = snapshot(logdir)
    with pytest.raises(IncompatibleCheckpointError, match=f"checkpoint {newest} is from an"):
        Predictor.from_logdir(logdir)
    text = tmp_path / "in.txt"
    text.write_text("In the beginning\n")
    for args in (
        ["decode", "--logdir", str(logdir)],
        ["eval", "--logdir", str(logdir)],
        ["infer", "--logdir", str(logdir), "--input", str(text)],
    ):
        code, err = run(args)
        assert code == 1, err
        line = one_line_error(err, args[0])
        assert f"checkpoint {newest} is from another model: parameter '" in line
        assert "trained as RNMTPlusMT" in line
    assert snapshot(logdir) == before
    # The run's own checkpoints still serve once the foreign file is moved away by hand.
    newest.rename(tmp_path / newest.name)
    assert Predictor.from_logdir(logdir).checkpoint_path == checkpoint_path(
        logdir / "checkpoints", 2
    )
