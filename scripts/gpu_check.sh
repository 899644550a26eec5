#!/usr/bin/env bash
# The GPU check (issue 15): seqlab's CUDA paths end to end on a machine with one NVIDIA GPU,
# no network and no install step, in under 10 minutes. What it runs: bench/gpu_check.py's
# docstring and bench/README.md ("gpu_check").
#
# 1. Once, where the corpus can be made (the Debian sword packages; the dev machine), prepare
#    the data dir: the Bible corpus (`seqlab data prepare bible_en_es --cache-dir DIR`) plus
#    the SentencePiece models seqlab trains on it (transformer_base's 16k, transformer_tiny's,
#    and the CUDA tests' tiny one), about 9 MiB:
#
#      PYTHON=.venv/bin/python bash scripts/gpu_check.sh --prepare /tmp/gpu_prepared
#
# 2. On the GPU machine (its own python3 with a CUDA torch; seqlab runs from this checkout
#    through PYTHONPATH):
#
#      bash scripts/gpu_check.sh /path/to/gpu_prepared [--out DIR]
#
#    The summary, a JSON of every number and the full log go to --out (default $OUT if set,
#    else ./gpu_check_out). Exit status 1 if any part failed (every part runs regardless).
#
# 3. Rehearsal on a CPU machine (tiny sizes, a few minutes; the CUDA-only parts skip):
#
#      PYTHON=.venv/bin/python bash scripts/gpu_check.sh /tmp/gpu_prepared --cpu-rehearsal
#
# The interpreter is $PYTHON (default python3).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "gpu_check: no Python interpreter '$PYTHON' (set PYTHON=...)" >&2
  exit 2
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# Python resolves the interpreter's own path for the child processes (sys.executable).
exec "$PYTHON" "$repo/bench/gpu_check.py" "$@"
