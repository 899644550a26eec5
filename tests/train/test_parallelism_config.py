"""trainer.distributed: configs written by earlier versions."""

from __future__ import annotations

import pytest

from seqlab.core.config import Config, ConfigError
from seqlab.train.parallelism_config import ParallelismConfig


def test_a_config_from_before_the_mesh_loads_or_names_the_field() -> None:
    """Runs written before ``mesh`` replaced ``tensor_degree`` still load: 0 meant what an
    empty mesh means; another degree cannot be translated without the job's size."""
    data = ParallelismConfig().to_dict()
    del data["mesh"]
    assert Config.from_dict({**data, "tensor_degree": 0}) == ParallelismConfig()
    with pytest.raises(ConfigError, match=r"tensor_degree=2 .* \"mesh\": \[D, 2\]"):
        Config.from_dict({**data, "tensor_degree": 2})
