#!/usr/bin/env python
"""`seqlab decode` of one trained run at two commits, alternated in one run: speed and output.

Checks out ``--before`` (a commit) into a temporary git worktree, then runs
``python -m seqlab decode --logdir RUN --dataset DATASET`` with that tree and with this one on
``PYTHONPATH``, alternating ``--reps`` times, and prints for each: the decode's own
sentences/s (model loading not counted), the wall time of the command, BLEU, and how many
hypotheses differ from the ``--before`` commit's.

    python bench/decode_commits.py --logdir runs/bible_en_es.transformer_small --before 357548b

Both runs write the run's decode directory in turn (the same files); the hypotheses are read
back after each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--logdir", required=True, help="A trained run.")
    p.add_argument("--before", required=True, help="The commit to compare with (git rev).")
    p.add_argument("--dataset", default="test", help="Split to decode.")
    p.add_argument("--reps", type=int, default=2, help="Decodes per side, alternated.")
    p.add_argument("--set", action="append", default=[], help="Passed to both decodes.")
    return p.parse_args(argv)


def decode(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ``seqlab decode`` with ``root`` on PYTHONPATH: its score and hypotheses."""
    logdir = str(Path(args.logdir).resolve())
    command = [sys.executable, "-m", "seqlab", "decode", "--logdir", logdir]
    command += ["--dataset", args.dataset] + [a for s in args.set for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    start = time.perf_counter()
    # cwd: `python -m` puts the working directory ahead of PYTHONPATH on sys.path.
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"decode with {root} failed:\n{done.stderr[-2000:]}")
    out_dir = max(Path(args.logdir).glob(f"decode_{args.dataset}*"), key=os.path.getmtime)
    score_path = max(out_dir.glob("score-*.json"), key=os.path.getmtime)
    score = json.loads(score_path.read_text())
    hyps = score_path.with_name(score_path.name.replace("score-", "hyps-").replace(".json", ".txt"))
    return {
        "wall_s": seconds,
        "sentences_per_s": score["sentences_per_second"],
        "bleu": score.get("bleu"),
        "hypotheses": hyps.read_text(encoding="utf-8").splitlines(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seqlab-before-") as tmp:
        before_root = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before_root), args.before],
            check=True,
            capture_output=True,
        )
        try:
            sides = {"before": before_root, "after": ROOT}
            runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
            for rep in range(args.reps):
                for side, root in sides.items():
                    runs[side].append(decode(root, args))
                    r = runs[side][-1]
                    print(
                        f"rep {rep + 1} {side}: {r['sentences_per_s']:.2f} sentences/s, "
                        f"{r['wall_s']:.1f} s wall, BLEU {r['bleu']:.2f}",
                        flush=True,
                    )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before_root)],
                check=False,
                capture_output=True,
            )
    speed = {side: statistics.median(r["sentences_per_s"] for r in rs) for side, rs in runs.items()}
    reference = runs["before"][0]["hypotheses"]
    differ = sum(a != b for a, b in zip(reference, runs["after"][0]["hypotheses"], strict=True))
    print(f"\nbefore ({args.before}): {speed['before']:.2f} sentences/s (median)")
    print(f"after (working tree): {speed['after']:.2f} sentences/s (median)")
    print(f"speed-up: {speed['after'] / speed['before']:.2f}x")
    print(
        f"BLEU before {runs['before'][0]['bleu']:.2f}, after {runs['after'][0]['bleu']:.2f}; "
        f"{differ} of {len(reference)} hypotheses differ"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
