"""A few utterances synthesized with flite once per session (skipped without flite)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from seqlab.data.corpora.flite_bible import FliteBibleRequest, prepare_flite_bible


@pytest.fixture(scope="session")
def tiny_speech_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """8 training utterances (flite voices only), 4 dev, 4 test; manifests by split."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite, or scripts/setup.sh)")
    cache = tmp_path_factory.mktemp("speech_cache")
    request = FliteBibleRequest(
        num_train=8, num_dev=4, num_test=4, espeak_fraction=0.0, max_words=8
    )
    paths = prepare_flite_bible(cache / "corpora" / "flite_tiny", request, show_progress=False)
    return paths | {"cache": cache}
