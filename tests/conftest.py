"""Fixtures shared across test packages."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bible_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the tiny Bible runs, so the corpus is prepared once per session."""
    return tmp_path_factory.mktemp("bible_cache")
