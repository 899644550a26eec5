#!/usr/bin/env bash
# Command 1: set up, prepare the English->Spanish Bible, train transformer_small, decode the
# held-out test books with beam search and print the test BLEU. Re-running reuses the
# prepared data and resumes training from the last checkpoint.
# Extra arguments go to `seqlab train` (e.g. --set trainer.max_steps=100).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
LOGDIR=${LOGDIR:-runs/bible_en_es.transformer_small}
.venv/bin/seqlab data prepare bible_en_es
.venv/bin/seqlab train --experiment mt.bible_en_es.transformer_small --logdir "$LOGDIR" "$@"
.venv/bin/seqlab decode --logdir "$LOGDIR" --dataset test
echo "[main job] wall time: $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
