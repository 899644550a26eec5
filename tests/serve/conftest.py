"""Fixtures of the serve tests (skipped without seqlab serve's packages)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="seqlab serve's packages: pip install -e '.[dev]'")
pytest.importorskip("httpx", reason="the serve tests' HTTP client: pip install -e '.[dev]'")

from serve_helpers import BEAM_4  # noqa: E402

from seqlab.export.predictor import Predictor  # noqa: E402
from seqlab.serve.served_model import ServedModel  # noqa: E402


@pytest.fixture(scope="session")
def beam_mt(greedy_tiny_logdir: Path) -> ServedModel:
    """transformer_tiny after 2 steps, decoded with beam 4."""
    return ServedModel(Predictor.from_logdir(greedy_tiny_logdir, overrides=BEAM_4))
