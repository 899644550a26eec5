"""A table of parameter counts per submodule."""

from __future__ import annotations

from torch import nn


def parameter_table(model: nn.Module, max_depth: int = 2) -> str:
    """Rows ``submodule  class  parameters`` down to ``max_depth``, then the total.

    A parameter shared by two modules (tied embeddings) counts in each row that holds it but
    once in the total.
    """
    rows: list[tuple[str, str, int]] = []
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        if 0 < depth <= max_depth:
            n = sum(p.numel() for p in module.parameters())
            rows.append(("  " * (depth - 1) + name.rsplit(".", 1)[-1], type(module).__name__, n))
    total = sum(p.numel() for p in model.parameters())  # parameters() yields shared ones once
    width = max([len(r[0]) for r in rows] + [10])
    lines = [f"{'submodule':<{width}}  {'class':<28} {'parameters':>12}"]
    lines += [f"{n:<{width}}  {c:<28} {k:>12,}" for n, c, k in rows]
    lines.append(f"{'total':<{width}}  {'':<28} {total:>12,}")
    return "\n".join(lines)
