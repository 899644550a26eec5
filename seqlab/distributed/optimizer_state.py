"""Optimizer state dicts keyed by parameter index (torch's own) or by parameter name (DCP's).

``torch.optim.Optimizer.state_dict()`` numbers parameters 0, 1, ... in the order of its
param groups; ``torch.distributed.checkpoint.state_dict`` keys them by fully qualified name,
which survives resharding. Converting between the two lets a single-process checkpoint
resume under torchrun and a distributed one resume in a single process.
"""

from __future__ import annotations

import copy
from typing import Any


def optimizer_state_by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Index-keyed -> name-keyed; ``names[i]`` is the name of parameter index ``i``."""
    out = {"state": {}, "param_groups": []}
    for index, value in state["state"].items():
        out["state"][names[int(index)]] = value
    for group in state["param_groups"]:
        group = dict(group)
        group["params"] = [names[int(i)] for i in group["params"]]
        out["param_groups"].append(group)
    return out


def optimizer_state_by_index(state: dict[str, Any]) -> dict[str, Any]:
    """Name-keyed -> index-keyed, numbering names in the order the param groups list them."""
    index_of: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        group = copy.copy(group)
        numbered = []
        for name in group["params"]:
            index_of.setdefault(name, len(index_of))
            numbered.append(index_of[name])
        group["params"] = numbered
        groups.append(group)
    missing = sorted(set(state["state"]) - set(index_of))
    if missing:
        raise ValueError(f"optimizer state for parameters in no param group: {missing[:5]}")
    return {
        "state": {index_of[name]: value for name, value in state["state"].items()},
        "param_groups": groups,
    }
