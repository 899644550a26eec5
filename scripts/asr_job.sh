#!/usr/bin/env bash
# The speech recipe in one command: set up, prepare the synthesized-speech corpus (flite_bible)
# and the LM corpus without its dev/test verses (bible_en_asr_lm), train the Conformer-CTC
# recognizer and a character Transformer LM on the recognizer's own tokenizer, then decode the
# held-out test voice without and with shallow LM fusion and print test WER/CER of each.
# Re-running reuses the prepared data and resumes both trainings from their last checkpoints.
# Extra arguments go to the recognizer's `seqlab train` (e.g. --set trainer.max_steps=100).
# Environment: ASR_EXPERIMENT (default asr.flite_bible.conformer_ctc_small), LM_EXPERIMENT,
# ASR_LOGDIR, LM_LOGDIR, LM_ARGS (extra arguments of the LM's `seqlab train`, word-split),
# LM_WEIGHT and LM_LENGTH_BONUS (the fusion settings; unset, each pair of LM_WEIGHTS x
# LM_LENGTH_BONUSES is decoded on the first TUNE_UTTERANCES (100) of dev2 and the pair with the
# lowest WER decodes test).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
ASR_EXPERIMENT=${ASR_EXPERIMENT:-asr.flite_bible.conformer_ctc_small}
LM_EXPERIMENT=${LM_EXPERIMENT:-lm.bible_en_asr_lm.transformer_small}
ASR_LOGDIR=${ASR_LOGDIR:-runs/${ASR_EXPERIMENT#asr.}}
LM_LOGDIR=${LM_LOGDIR:-runs/${LM_EXPERIMENT#lm.}}
seqlab=.venv/bin/seqlab
$seqlab data prepare flite_bible
$seqlab data prepare bible_en_asr_lm
$seqlab train --experiment "$ASR_EXPERIMENT" --logdir "$ASR_LOGDIR" "$@"
$seqlab train --experiment "$LM_EXPERIMENT" --logdir "$LM_LOGDIR" \
    --set "data.tokenizer.model_path=$ASR_LOGDIR/spm.model" ${LM_ARGS:-}
score() {  # "WER x, CER y (n words)" of the newest score in the decode directory $1
    .venv/bin/python - "$ASR_LOGDIR/$1" <<'PY'
import json, os, sys
from pathlib import Path
scores = sorted(Path(sys.argv[1]).glob("score-*.json"), key=os.path.getmtime)
s = json.loads(scores[-1].read_text())
print(f"WER {s['wer']:.1f}, CER {s['cer']:.1f} ({int(s['num_words'])} words)")
PY
}
fuse() {  # the --set arguments that fuse the LM with weight $1 and length bonus $2
    echo --set "task.lm_fusion.lm_logdir=$LM_LOGDIR" --set "task.lm_fusion.weight=$1" \
        --set "task.lm_fusion.length_bonus=$2"
}
$seqlab decode --logdir "$ASR_LOGDIR" --dataset test --name nolm --set task.lm_fusion.lm_logdir=
if [ -z "${LM_WEIGHT:-}" ] || [ -z "${LM_LENGTH_BONUS:-}" ]; then
    # Tune the fusion on the first TUNE_UTTERANCES of dev2 (an unseen speaker, like test),
    # never on test.
    best=""
    for w in ${LM_WEIGHTS:-0.3 0.5 0.8}; do
        for b in ${LM_LENGTH_BONUSES:-0.5 1.0}; do
            # shellcheck disable=SC2046
            $seqlab decode --logdir "$ASR_LOGDIR" --dataset dev2 --name "lm_w${w}_b${b}" \
                --set "data.eval_limit=${TUNE_UTTERANCES:-100}" $(fuse "$w" "$b")
            wer=$(score "decode_dev2_lm_w${w}_b${b}" | cut -d' ' -f2 | tr -d ,)
            echo "[asr job] dev2 with the LM (weight $w, length bonus $b): WER $wer"
            if [ -z "$best" ] || awk "BEGIN{exit !($wer < $best)}"; then
                best=$wer LM_WEIGHT=$w LM_LENGTH_BONUS=$b
            fi
        done
    done
fi
# shellcheck disable=SC2046
$seqlab decode --logdir "$ASR_LOGDIR" --dataset test --name lm $(fuse "$LM_WEIGHT" "$LM_LENGTH_BONUS")
echo "[asr job] test without the LM: $(score decode_test_nolm)"
echo "[asr job] test with the LM (weight $LM_WEIGHT, length bonus $LM_LENGTH_BONUS, chosen on dev2): $(score decode_test_lm)"
echo "[asr job] wall time: $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
