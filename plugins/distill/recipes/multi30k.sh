#!/usr/bin/env bash
# The Multi30k de->en students of the distill table, each one toolkit-distill run: the same
# student shape (transformer_student: 3-block encoder, 1-block decoder) trained for the same
# number of updates on real targets, on the teacher's beam outputs (sequence), with the
# word-level KD loss (word), and both. The sequence and both runs share the teacher's
# translation of the training set (the stage is stamped with its inputs' hash, so the copy is
# checked, not trusted).
# Usage: plugins/distill/recipes/multi30k.sh TEACHER DATA RUNS [METHOD ...]
#   TEACHER: e.g. runs/qn/plain/checkpoint_avg3.pt of plugins/quant_noise/recipes/multi30k_train.sh
#   METHOD: real sequence word both (default all four, in that order)
# Environment: UPDATES (2000), TOKENS (1024 tokens per batch), LR (1e-3), THREADS (2),
# DECODER_LAYERS (1: the student's decoder blocks), LABEL_SMOOTHING (0.1: the student's
# criterion.label_smoothing), SEED (the student's common.seed; unset: the core's default, 1),
# INTERPOLATE (false; true: sequence-level interpolation, each training target the teacher's beam
# hypothesis closest to the original by sentence BLEU: its own translation, not shared).
set -euo pipefail
TEACHER=${1:?teacher checkpoint}
DATA=${2:?data folder}
RUNS=${3:?runs folder}
shift 3
METHODS=${*:-real sequence word both}
UPDATES=${UPDATES:-2000}
TOKENS=${TOKENS:-1024}
LR=${LR:-1e-3}
DECODER_LAYERS=${DECODER_LAYERS:-1}
LABEL_SMOOTHING=${LABEL_SMOOTHING:-0.1}
export OMP_NUM_THREADS=${THREADS:-2}
mkdir -p "$RUNS"
INTERPOLATE=${INTERPOLATE:-false}
SEED_ARG=()
if [ -n "${SEED:-}" ]; then SEED_ARG=(student.common.seed="$SEED"); fi

for method in $METHODS; do
    out="$RUNS/$method"
    if [ "$method" = both ] && [ -d "$RUNS/sequence/translate" ] && [ ! -d "$out/translate" ]; then
        mkdir -p "$out" && cp -r "$RUNS/sequence/translate" "$out/translate"
    fi
    toolkit-distill teacher="$TEACHER" data="$DATA" out="$out" method="$method" interpolate="$INTERPOLATE" \
        student.task=multi30k_de_en student.model=transformer_student student.model.decoder_layers="$DECODER_LAYERS" student.common.threads="$OMP_NUM_THREADS" \
        student.optimization.max_update="$UPDATES" student.optimization.max_time_minutes=0 \
        student.dataset.max_tokens="$TOKENS" student.optim.lr="$LR" student.criterion.label_smoothing="$LABEL_SMOOTHING" \
        student.common.log_interval=100 ${SEED_ARG[@]+"${SEED_ARG[@]}"} \
        > "$RUNS/$method.json.part"
    mv "$RUNS/$method.json.part" "$RUNS/$method.json"
done
