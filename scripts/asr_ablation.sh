#!/usr/bin/env bash
# What each change of issue 17 contributes, at equal training time: the Conformer-CTC preset
# (asr.flite_bible.conformer_ctc_small) with one change undone at a time, every variant the
# same number of steps on one core of its own, two variants side by side (one per core), then
# test WER/CER of each without a language model.
#   bash scripts/asr_ablation.sh [STEPS]        # default 1200 steps per variant
# Environment: ABLATION_DIR (default runs/asr_ablation); ABLATION_VARIANTS (default all of:
# preset no_scaling_fix old_settings no_augmentation flite_voices_only; paired in order). Needs
# 2 free cores and the prepared flite_bible corpus (scripts/asr_job.sh or `seqlab data prepare
# flite_bible`); flite_voices_only also synthesizes its own training split (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1200}
dir=${ABLATION_DIR:-runs/asr_ablation}
seqlab=.venv/bin/seqlab
cache=${SEQLAB_CACHE:-$HOME/.cache/seqlab}
mkdir -p "$dir"
# The schedule of every variant ends at its last step (warm-up scaled with it).
common=(--set "trainer.max_steps=$steps" --set "trainer.schedule.warmup_steps=$((steps / 15))"
    --set trainer.num_threads=1 --set "trainer.eval_every_steps=$steps"
    --set "trainer.decode_every_steps=$steps" --set trainer.eval_datasets=dev2
    --set trainer.decode_datasets=dev2)
declare -A variants=(
    [preset]=""
    [no_scaling_fix]="--set task.scale_frames=false"
    [old_settings]="--set trainer.schedule.peak_learning_rate=6e-4 --set task.spec_augment.num_freq_masks=2 --set task.spec_augment.num_time_masks=4 --set task.spec_augment.max_time_mask_width=20 --set task.spec_augment.time_mask_max_ratio=0.05"
    [flite_voices_only]="--set data.train_path=$cache/corpora/flite_bible_flite_voices/train.jsonl"
    [no_augmentation]="--set data.augmentation.speeds=1.0 --set data.augmentation.max_gain_db=0 --set data.augmentation.noise_prob=0 --set data.augmentation.dither=0"
)
train() {  # train variant $1 on core $2
    local name=$1 core=$2 start
    start=$(date +%s)
    # shellcheck disable=SC2086
    taskset -c "$core" $seqlab train --experiment asr.flite_bible.conformer_ctc_small \
        --logdir "$dir/$name" "${common[@]}" ${variants[$name]} >"$dir/$name.log" 2>&1
    echo "$(( $(date +%s) - start ))" >"$dir/$name.seconds"
}
read -r -a names <<<"${ABLATION_VARIANTS:-preset no_scaling_fix old_settings no_augmentation flite_voices_only}"
for name in "${names[@]}"; do
    if [ -z "${variants[$name]+set}" ]; then
        echo "ABLATION_VARIANTS: unknown variant '$name' (known: ${!variants[*]})" >&2
        exit 2
    fi
done
if [[ " ${names[*]} " == *" flite_voices_only "* ]]; then
    # The voices' contribution: the same corpus request with every training utterance read by
    # flite's three speakers (kal, awb, slt), without espeak-ng's accents and variants and
    # without festival. The same verses, dev, dev2 and test (those come from the full corpus).
    .venv/bin/python - "$cache/corpora/flite_bible_flite_voices" <<'PY'
import sys
from pathlib import Path
from seqlab.data.corpora.flite_bible import FliteBibleRequest, prepare_flite_bible
request = FliteBibleRequest(espeak_fraction=0.0, festival_fraction=0.0)
prepare_flite_bible(Path(sys.argv[1]), request)
PY
fi
for ((i = 0; i < ${#names[@]}; i += 2)); do
    train "${names[i]}" 0 &
    if ((i + 1 < ${#names[@]})); then  # an odd last variant trains alone on one core
        train "${names[i + 1]}" 1 &
    fi
    wait
done
for name in "${names[@]}"; do
    $seqlab decode --logdir "$dir/$name" --dataset test --set trainer.num_threads=2 >/dev/null 2>&1
    .venv/bin/python - "$dir" "$name" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1]) / sys.argv[2]
test = json.loads(sorted((run / "decode_test").glob("score-*.json"))[-1].read_text())
dev2 = json.loads(sorted((run / "decode_dev2").glob("score-*.json"))[-1].read_text())
seconds = int((Path(sys.argv[1]) / f"{sys.argv[2]}.seconds").read_text())
print(f"{sys.argv[2]:16s} {seconds // 60:3d} min {seconds % 60:02d} s  dev2 WER {dev2['wer']:5.1f} "
      f"CER {dev2['cer']:5.1f}  test WER {test['wer']:5.1f} CER {test['cer']:5.1f}")
PY
done
