"""Property-based input to the Predictor and ``seqlab infer``: input over the limits or not
plain text gets one clear message naming the input (or file and line); any valid input gets
exactly one output line per input line."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from seqlab.cli import main
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.export.input_limits import InputTooLargeError
from seqlab.export.input_text import InputTextError
from seqlab.export.predictor import Predictor

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)

EXAMPLES = 40
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
MAX_BATCH = 4
MAX_TOKENS = 12  # small, so that a few words are already too many


@pytest.fixture(scope="module")
def logdir(greedy_tiny_logdir: Path) -> Path:
    """transformer_tiny after 2 steps, greedy with short outputs, so that decoding is fast."""
    return greedy_tiny_logdir


@pytest.fixture(scope="module")
def predictor(logdir: Path) -> Predictor:
    return Predictor.from_logdir(logdir, max_batch_size=MAX_BATCH, max_input_tokens=MAX_TOKENS)


def num_tokens(predictor: Predictor, text: str) -> int:
    """Tokens of ``text`` with EOS, as the limit counts them."""
    return len(predictor.context.data.tokenizer.encode_batch([text])[0]) + 1


# Plain text: anything but control characters (tab is fine) and surrogates.
PLAIN = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=12)
VOCABULARY = st.sampled_from(["In", "the", "beginning", "God", "created", "heaven", "and"])
SHORT = st.lists(VOCABULARY, min_size=1, max_size=4).map(" ".join)  # within MAX_TOKENS
LONG = st.lists(VOCABULARY, min_size=8, max_size=30).map(" ".join)  # mostly over it
CONTROL = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x1F).filter(lambda c: c != "\t"),
    st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
)


@st.composite
def valid_texts(draw: st.DrawFn) -> str:
    """Plain text, a few words, an empty line or a blank one."""
    kind = draw(st.sampled_from(["plain", "words", "empty", "blank"]))
    if kind == "plain":
        return draw(PLAIN)
    if kind == "words":
        return draw(SHORT)
    return "" if kind == "empty" else draw(st.sampled_from([" ", "\t", "  \t ", "\u3000"]))


@st.composite
def bad_texts(draw: st.DrawFn) -> str:
    """Too many words, or plain text with a control character or a lone surrogate."""
    kind = draw(st.sampled_from(["long", "long", "control", "surrogate"]))
    if kind == "long":
        return draw(LONG)
    text = draw(PLAIN)
    i = draw(st.integers(0, len(text)))
    bad = draw(CONTROL) if kind == "control" else chr(draw(st.integers(0xD800, 0xDFFF)))
    return text[:i] + bad + text[i:]


@st.composite
def with_bad_items(draw: st.DrawFn, valid: st.SearchStrategy, bad: st.SearchStrategy, size: int):
    """Up to ``size`` valid items with 0 to 2 bad ones inserted at random places."""
    items = draw(st.lists(valid, max_size=size))
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), draw(bad))
    return items


def first_not_plain(items: list[str]) -> tuple[int, int] | None:
    """(index, 1-based column) of the first control character or surrogate, else None."""
    for i, text in enumerate(items):
        for column, char in enumerate(text, 1):
            code = ord(char)
            if (code < 0x20 and char != "\t") or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF:
                return i, column
    return None


# ---- the Predictor -------------------------------------------------------------------------


@SETTINGS
@given(items=with_bad_items(valid_texts(), bad_texts(), MAX_BATCH))
@example(items=[])
@example(items=["", " ", "In the beginning"])
@example(items=["a\x00b"])
@example(items=["In the beginning God created the heaven and the earth and the earth"])
def test_predictor_answers_each_input_or_refuses_with_one_message(
    predictor: Predictor, items: list[str]
) -> None:
    try:
        outputs = predictor.predict(items)
    except (InputTooLargeError, InputTextError) as e:
        event(f"refused: {type(e).__name__}")
        message = str(e)
        assert "\n" not in message
        if len(items) > MAX_BATCH:
            assert isinstance(e, InputTooLargeError), message
            assert message == f"{len(items)} inputs in one call; the limit is {MAX_BATCH}"
            return
        bad = first_not_plain(items)
        if bad is not None:
            assert isinstance(e, InputTextError), message
            assert message.startswith(f"input {bad[0]}: "), message
            assert f"at column {bad[1]}; expected plain text" in message
            return
        lengths = [num_tokens(predictor, text) for text in items]
        first = next(i for i, n in enumerate(lengths) if n > MAX_TOKENS)
        assert isinstance(e, InputTooLargeError), message
        assert e.index == first
        assert message == f"input {first} has {lengths[first]} tokens; the limit is {MAX_TOKENS}"
        return
    assert len(items) <= MAX_BATCH and first_not_plain(items) is None
    assert all(num_tokens(predictor, text) <= MAX_TOKENS for text in items)
    assert len(outputs) == len(items) and all(isinstance(out, str) for out in outputs)
    event("answered")


# ---- seqlab infer ----------------------------------------------------------------------------


@contextlib.contextmanager
def stdin_bytes(data: bytes) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data))
    try:
        yield
    finally:
        sys.stdin = saved


def infer(logdir: Path, data: bytes, *extra: str) -> tuple[int, str, str]:
    """Runs ``seqlab infer`` on ``data`` as stdin; returns (exit code, stdout, stderr)."""
    args = ["infer", "--logdir", str(logdir), "--batch-size", str(MAX_BATCH)]
    args += ["--max-input-tokens", str(MAX_TOKENS), *extra]
    out, err = io.StringIO(), io.StringIO()
    with stdin_bytes(data), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@st.composite
def bad_lines(draw: st.DrawFn) -> bytes:
    """A line from ``bad_texts``, or plain text with bytes that are not UTF-8."""
    if draw(st.booleans()):
        return draw(bad_texts()).encode("utf-8", "surrogatepass")
    good = draw(PLAIN).encode()
    bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc", b"\xf8\x88"]))
    i = draw(st.integers(0, len(good)))
    return good[:i] + bad + good[i:]


def split_expected(data: bytes) -> list[bytes]:
    """The lines seqlab infer must see in ``data`` (the reference: LF splits, CRLF allowed)."""
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


@SETTINGS
@given(
    lines=with_bad_items(valid_texts().map(str.encode), bad_lines(), 3 * MAX_BATCH + 1),
    crlf=st.booleans(),
    final_newline=st.booleans(),
)
@example(lines=[b"In the beginning", b"", b"\xff\xfe"], crlf=False, final_newline=True)
@example(lines=[b"", b"", b""], crlf=True, final_newline=False)
@example(lines=[b"God", b"a\x1b[31mred"], crlf=False, final_newline=True)
def test_infer_prints_one_line_per_input_line_or_one_error_naming_the_line(
    logdir: Path, predictor: Predictor, lines: list[bytes], crlf: bool, final_newline: bool
) -> None:
    newline = b"\r\n" if crlf else b"\n"
    data = newline.join(lines) + (newline if final_newline and lines else b"")
    # A line that itself ends in CR (a stray control character) would read as CRLF.
    lines = split_expected(data)
    code, out, err = infer(logdir, data)
    printed = out.splitlines()
    decoded = []
    for number, line in enumerate(lines, 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            expected = f"seqlab infer: error: <stdin>:{number}: invalid UTF-8 (byte 0x"
            break
        if first_not_plain([text]):
            expected = f"seqlab infer: error: <stdin>:{number}: control character U+"
            break
        decoded.append(text)
    else:
        expected = ""
    event(f"refused: {expected.split(': ')[-1]}" if expected else "decoded")
    if expected:  # refused before anything is decoded
        assert code == 1 and out == "", (code, out, err)
        assert err.count("\n") == 1 and err.startswith(expected), err
        return
    too_long = [i for i, text in enumerate(decoded) if num_tokens(predictor, text) > MAX_TOKENS]
    event("refused: too long" if too_long else "answered")
    if too_long:  # batches before the one holding the line are printed
        first = too_long[0]
        assert code == 1, err
        assert err.startswith(f"seqlab infer: error: <stdin>:{first + 1}: the line has "), err
        assert err.endswith(f"; the limit is {MAX_TOKENS} (--max-input-tokens)\n"), err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert len(printed) == first - first % MAX_BATCH
        return
    assert code == 0, err
    assert err == ""
    assert len(printed) == len(decoded) == len(out.split("\n")) - 1


@pytest.mark.slow  # two fresh processes: about 10 s each on a busy machine
def test_infer_reads_real_stdin_and_refuses_invalid_utf8(logdir: Path) -> None:
    command = [sys.executable, "-m", "seqlab.cli", "infer", "--logdir", str(logdir)]
    good = subprocess.run(
        command, input=b"In the beginning\n\n\tGod\r\nend", capture_output=True, timeout=300
    )
    assert good.returncode == 0, good.stderr
    assert len(good.stdout.decode().splitlines()) == 4
    bad = subprocess.run(command, input=b"God\n\xff\xfe\n", capture_output=True, timeout=300)
    assert bad.returncode == 1 and bad.stdout == b""
    assert bad.stderr.decode() == (
        "seqlab infer: error: <stdin>:2: invalid UTF-8 (byte 0xff at byte 1 of the line)\n"
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--max-input-tokens", "-3"], "--max-input-tokens must be at least 1, got -3"),
        (["--input", "/nonexistent/in.txt"], "cannot read --input /nonexistent/in.txt: No such"),
    ],
)
def test_bad_infer_flags_get_one_line(logdir: Path, flags: list[str], message: str) -> None:
    args = ["infer", "--logdir", str(logdir), *flags]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), stdin_bytes(b"God\n"):
        assert main(args) == 2
    assert err.getvalue().startswith(f"seqlab infer: error: {message}"), err.getvalue()
    assert err.getvalue().count("\n") == 1


def test_input_file_lines_are_named_by_file(logdir: Path, tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xef\xbb\xbfGod\ncreated\x00\n")
    code, out, err = infer(logdir, b"", "--input", str(path))
    assert code == 1 and out == ""
    assert err == (
        f"seqlab infer: error: {path}:2: control character U+0000 at column 8; "
        "expected plain text, one input per line\n"
    )
