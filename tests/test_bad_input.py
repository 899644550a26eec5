"""Property-based bad input: config overrides, data lines and checkpoint files.

Whatever the input, seqlab answers with its own one-line error naming the culprit (key,
file:line, checkpoint file) and never with a traceback, and never deletes the file it refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from seqlab.cli import main
from seqlab.core.config import all_keys
from seqlab.core.registry import get_experiment
from seqlab.data.text_pairs import DataFormatError, read_text_pairs
from seqlab.train.checkpoint import (
    MAGIC,
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)

EXPERIMENT = "mt.bible_en_es.transformer_tiny"
EXAMPLES = 40
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

PRESET = get_experiment(EXPERIMENT)
KEYS = all_keys(PRESET)
FLAT = PRESET.flatten()
TYPED_KEYS = sorted(
    k for k in KEYS if type(FLAT[k]) in (int, float, bool) and not k.endswith(".seed")
)


def run_inspect(*overrides: str) -> tuple[int, str]:
    args = ["inspect", "--experiment", EXPERIMENT]
    for item in overrides:
        args += [f"--set={item}"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    return code, err.getvalue()


def assert_one_line_error(code: int, err: str, culprit: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("seqlab inspect: error: "), err
    assert culprit in lines[0], (culprit, err)


# ---- config overrides ---------------------------------------------------------------------

NAME_CHARS = st.text(st.characters(codec="utf-8", exclude_characters="=\n\r"), max_size=12)


@st.composite
def unknown_keys(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(KEYS))
    kind = draw(st.sampled_from(["suffix", "typo", "prefix", "random"]))
    if kind == "suffix":
        key = f"{base}.{draw(NAME_CHARS)}"
    elif kind == "typo":
        i = draw(st.integers(0, len(base) - 1))
        key = base[:i] + draw(NAME_CHARS.filter(bool)) + base[i + 1 :]
    elif kind == "prefix":
        key = f"{draw(NAME_CHARS)}.{base}"
    else:
        key = draw(NAME_CHARS)
    key = key.strip()
    # A key that happens to be real, or a section, is not what this test is about.
    sections = {k.rsplit(".", 1)[0] for k in KEYS}
    if key in KEYS or key in sections:
        key = key + ".x_unknown"
    return key


@SETTINGS
@given(key=unknown_keys(), value=st.text(max_size=10))
@example(key="task.encoder.num_layer", value="2")
@example(key="", value="3")
def test_unknown_keys_get_one_line_error_naming_the_key(key: str, value: str) -> None:
    code, err = run_inspect(f"{key}={value}")
    assert_one_line_error(code, err, f"'{key}'" if "'" not in key else key)


def _parses_as_number_or_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "false", "yes", "no", "on", "off", "none", "null"):
        return True
    for parse in (float, lambda s: int(s.strip().replace("_", ""))):
        try:
            parse(text)
            return True
        except ValueError:
            pass
    return False


@SETTINGS
@given(
    key=st.sampled_from(TYPED_KEYS),
    value=st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=15).filter(
        lambda s: not _parses_as_number_or_bool(s)
    ),
)
@example(key="trainer.max_steps", value="ten")
@example(key="trainer.max_steps", value="1.5")
@example(key="trainer.clip_gradient_norm", value="1,0")
def test_wrong_types_get_one_line_error_naming_the_key(key: str, value: str) -> None:
    code, err = run_inspect(f"{key}={value}")
    assert_one_line_error(code, err, f"'{key}' expects")


@SETTINGS
@given(item=st.text(max_size=20).filter(lambda s: "=" not in s))
def test_overrides_without_equals_get_one_line_error(item: str) -> None:
    code, err = run_inspect(item)
    assert_one_line_error(code, err, "must look like 'a.b.c=value'")


@SETTINGS
@given(value=st.text(max_size=12).map(lambda s: f"'{s}"), quote=st.sampled_from(["'", '"']))
@example(value="'a'b", quote="'")
@example(value="'\\N", quote="'")
@example(value='"x", "y', quote='"')
def test_malformed_quoted_strings_get_one_line_error(value: str, quote: str) -> None:
    text = quote + value[1:] + quote
    code, err = run_inspect(f"data.cache_dir={text}")
    if code == 0:  # a valid string literal: set as that string
        return
    assert_one_line_error(code, err, "'data.cache_dir'")


# ---- data lines -----------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=8)


@st.composite
def tsv_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["pair", "fields", "bytes", "blank"]))
    if kind == "pair":
        return f"{draw(TEXT)}\t{draw(TEXT)}".encode()
    if kind == "fields":
        return "\t".join(draw(st.lists(TEXT, max_size=4))).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=10)).replace(b"\n", b"")
    return b" " * draw(st.integers(0, 2))


@st.composite
def jsonl_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["pair", "object", "json", "bytes", "text"]))
    if kind == "pair":
        return json.dumps({"src": draw(TEXT), "tgt": draw(TEXT)}).encode()
    if kind == "object":
        values = st.one_of(TEXT, st.integers(), st.none(), st.lists(TEXT, max_size=2))
        obj = draw(st.dictionaries(st.sampled_from(["src", "tgt", "x"]), values, max_size=3))
        return json.dumps(obj).encode()
    if kind == "json":
        return json.dumps(draw(st.one_of(TEXT, st.integers(), st.lists(TEXT)))).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=10)).replace(b"\n", b"")
    return draw(TEXT).encode()


def check_reader(suffix: str, lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(b"\n".join(lines))
        try:
            pairs = read_text_pairs(path)
        except DataFormatError as e:
            where, _, rest = str(e).partition(": ")
            file, _, line = where.rpartition(":")
            assert file == str(path), e
            assert 1 <= int(line) <= len(lines), e
            assert rest and "\n" not in str(e), e
            return
        assert len(pairs) <= len(lines)
        assert all(src and tgt and src == src.strip() for src, tgt in pairs)


@SETTINGS
@given(lines=st.lists(tsv_lines(), min_size=1, max_size=6))
@example(lines=[b"a\tb", b"\xff\xfe\tb"])
@example(lines=[b"a\tb\tc"])
@example(lines=[b"\tb"])
def test_random_tsv_lines_parse_or_name_file_and_line(lines: list[bytes]) -> None:
    check_reader(".tsv", lines)


@SETTINGS
@given(lines=st.lists(jsonl_lines(), min_size=1, max_size=6))
@example(lines=[b'{"src": "a", "tgt": "b"}', b'{"src": "a"}'])
@example(lines=[b"[" * 100_000])
@example(lines=[b'{"src": "a", "tgt": "\\ud800"}'])
def test_random_jsonl_lines_parse_or_name_file_and_line(lines: list[bytes]) -> None:
    check_reader(".jsonl", lines)


# ---- checkpoint files -----------------------------------------------------------------------


def _real_checkpoint() -> bytes:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(11, 4), torch.nn.Linear(4, 3))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.tensor([1, 2])).sum().backward()
    optimizer.step()
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": [1, 2, 3]},
        "data_stream": {"epoch": 1, "position": 5},
        "skipped_steps": 0,
    }
    with tempfile.TemporaryDirectory() as tmp:
        return save_checkpoint(Path(tmp), 7, payload, keep=0).read_bytes()


GOOD = _real_checkpoint()
HEADER = len(MAGIC) + 32


@st.composite
def corruptions(draw: st.DrawFn) -> bytes:
    data = bytearray(GOOD)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete"]))
    i = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return bytes(data[:i])
    if kind == "flip":
        data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "overwrite":
        chunk = draw(st.binary(min_size=1, max_size=64))
        data[i : i + len(chunk)] = chunk
    elif kind == "insert":
        data[i:i] = draw(st.binary(min_size=1, max_size=16))
    else:
        del data[i : i + draw(st.integers(1, 64))]
    return bytes(data)


def rechecksummed(data: bytes) -> bytes:
    """The same corruption with a valid checksum, to reach the unpickler itself."""
    body = data[HEADER:]
    return MAGIC + hashlib.sha256(body).digest() + body


@SETTINGS
@given(corrupt=corruptions())
def test_corrupt_checkpoints_are_refused_and_kept(corrupt: bytes) -> None:
    if corrupt == GOOD:
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "ckpt-00000003.pt").write_bytes(GOOD)
        path = checkpoint_path(directory, 7)
        path.write_bytes(corrupt)
        try:
            load_checkpoint(path)
            raise AssertionError("a corrupt checkpoint was accepted")
        except CheckpointError as e:
            assert str(path) in str(e)
        # The previous good checkpoint is used instead, and the bad file stays for inspection.
        found = load_latest_checkpoint(directory)
        assert found is not None and found[0].name == "ckpt-00000003.pt"
        assert path.read_bytes() == corrupt


@SETTINGS
@given(corrupt=corruptions().filter(lambda data: len(data) >= HEADER))
def test_corrupt_payloads_with_valid_checksum_never_raise_anything_else(corrupt: bytes) -> None:
    data = rechecksummed(corrupt)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt-00000007.pt"
        path.write_bytes(data)
        try:
            payload = load_checkpoint(path)
        except CheckpointError as e:
            assert str(path) in str(e)
        else:
            # The zip container has no checksum over tensor bytes; what loads must be whole.
            assert payload.get("step") == 7 or payload.get("format_version") == 1
        assert path.read_bytes() == data
