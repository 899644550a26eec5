#!/usr/bin/env bash
# The speech recipe in one command: set up, prepare the synthesized-speech corpus (flite_bible)
# and the LM corpus without its dev/test verses (bible_en_asr_lm), train the Conformer-CTC
# recognizer and a character Transformer LM on the recognizer's own tokenizer, then decode the
# held-out test voice without and with shallow LM fusion and print test WER/CER of each.
# Re-running reuses the prepared data and resumes both trainings from their last checkpoints.
# Extra arguments go to the recognizer's `seqlab train` (e.g. --set trainer.max_steps=100).
# Environment: ASR_EXPERIMENT (default asr.flite_bible.conformer_ctc_small), LM_EXPERIMENT,
# ASR_LOGDIR, LM_LOGDIR, LM_ARGS (extra arguments of the LM's `seqlab train`, word-split),
# LM_WEIGHT and LM_LENGTH_BONUS (the fusion settings).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
ASR_EXPERIMENT=${ASR_EXPERIMENT:-asr.flite_bible.conformer_ctc_small}
LM_EXPERIMENT=${LM_EXPERIMENT:-lm.bible_en_asr_lm.transformer_small}
ASR_LOGDIR=${ASR_LOGDIR:-runs/${ASR_EXPERIMENT#asr.}}
LM_LOGDIR=${LM_LOGDIR:-runs/${LM_EXPERIMENT#lm.}}
LM_WEIGHT=${LM_WEIGHT:-0.5}
LM_LENGTH_BONUS=${LM_LENGTH_BONUS:-1.0}
seqlab=.venv/bin/seqlab
$seqlab data prepare flite_bible
$seqlab data prepare bible_en_asr_lm
$seqlab train --experiment "$ASR_EXPERIMENT" --logdir "$ASR_LOGDIR" "$@"
$seqlab train --experiment "$LM_EXPERIMENT" --logdir "$LM_LOGDIR" \
    --set "data.tokenizer.model_path=$ASR_LOGDIR/spm.model" ${LM_ARGS:-}
score() {  # the newest test score of the recognizer's run, as "WER x, CER y"
    .venv/bin/python - "$ASR_LOGDIR" <<'PY'
import json, os, sys
from pathlib import Path
scores = sorted(Path(sys.argv[1]).glob("decode_test*/score-*.json"), key=os.path.getmtime)
s = json.loads(scores[-1].read_text())
print(f"test WER {s['wer']:.1f}, CER {s['cer']:.1f} ({int(s['num_words'])} words)")
PY
}
$seqlab decode --logdir "$ASR_LOGDIR" --dataset test --set task.lm_fusion.lm_logdir=
without=$(score)
$seqlab decode --logdir "$ASR_LOGDIR" --dataset test --set "task.lm_fusion.lm_logdir=$LM_LOGDIR" \
    --set "task.lm_fusion.weight=$LM_WEIGHT" --set "task.lm_fusion.length_bonus=$LM_LENGTH_BONUS"
with=$(score)
echo "[asr job] without the LM: $without"
echo "[asr job] with the LM (weight $LM_WEIGHT, length bonus $LM_LENGTH_BONUS): $with"
echo "[asr job] wall time: $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
