"""NestedMap: a dict with attribute access whose nested structure maps like a pytree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class NestedMap(dict):
    """A dict whose keys are also attributes; values may be NestedMaps, lists or leaves."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"NestedMap has no key '{name}'; keys: {sorted(self)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def flatten(self) -> list[tuple[str, Any]]:
        """(dotted key, leaf) pairs in sorted key order."""
        out: list[tuple[str, Any]] = []
        for key in sorted(self):
            value = self[key]
            if isinstance(value, NestedMap):
                out.extend((f"{key}.{k}", v) for k, v in value.flatten())
            else:
                out.append((key, value))
        return out

    def with_leaves(self, leaves: dict[str, Any]) -> NestedMap:
        """A copy with the leaves named by :meth:`flatten`'s dotted keys replaced.

        The structure (empty NestedMaps included) is this map's; unnamed leaves are kept.
        """

        def fill(node: NestedMap, prefix: str) -> NestedMap:
            out = NestedMap()
            for key, value in node.items():
                name = f"{prefix}{key}"
                if isinstance(value, NestedMap):
                    out[key] = fill(value, f"{name}.")
                else:
                    out[key] = leaves.get(name, value)
            return out

        return fill(self, "")

    def transform(self, fn: Callable[[Any], Any]) -> NestedMap:
        """A new NestedMap with ``fn`` applied to every leaf."""
        return NestedMap(
            {k: v.transform(fn) if isinstance(v, NestedMap) else fn(v) for k, v in self.items()}
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> NestedMap:
        """Moves every tensor leaf to ``device`` (``non_blocking`` from pinned memory)."""
        return self.transform(
            lambda v: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        )
