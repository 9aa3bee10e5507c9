#!/usr/bin/env bash
# The LayerDrop table on Multi30k de->en: train, measure training speed, prune and score, plot.
# Usage: plugins/layerdrop/recipes/multi30k.sh DATA RUNS [STAGE ...]
#   STAGE: train (ld: 6+6 pre-norm transformer_small width, LayerDrop 0.2 on both sides; plain: the
#          same without; small: transformer_small 3+3; each UPDATES updates with the Multi30k
#          recipe's settings; only when named in MODELS: ld-dropout01, ld with model.dropout=0.1;
#          ld05, ld with rate 0.5; small-prenorm, small with model.normalize_before=true;
#          ld-late, plain's training with LayerDrop LATE_RATE on both sides from update LATE_START on;
#          ld-sub3 and ld-sub234, plain's training, then from update LATE_START on a share SUB_RATE
#          of the updates trains only the every-other 3+3 (ld-sub234: 2+2, 3+3 or 4+4) sub-network),
#          speed (training target tokens/s of the 6+6 model with and without LayerDrop,
#          alternating in one session: run it on a quiet machine), results (every-other
#          pruning of ld and plain to 6+6 .. 2+2, small as trained: test2016 BLEU, bytes,
#          sentences/s), plot; default all four.
# Environment: UPDATES (3000), THREADS (2), LATE_RATE (0.5), LATE_START (2000), SUB_RATE (0.5: ld-sub*'s
#              share of sub-network updates), MODELS (the trainings, default "ld plain small"; e.g.
#              MODELS=ld and MODELS=plain in two shells at THREADS=1). Wall-clock goes to
#              RUNS/MODEL/seconds. small has the settings of plugins/quant_noise/recipes/
#              multi30k_train.sh plain: an existing run of it can be linked as RUNS/small.
set -euo pipefail
DATA=${1:?data folder}
RUNS=${2:?runs folder}
shift 2
STAGES=${*:-train speed results plot}
UPDATES=${UPDATES:-3000}
THREADS=${THREADS:-2}
HERE=$(dirname "$0")
# pre-norm: the post-norm 6+6 at the recipe's lr (2e-3, 400 warm-up updates) does not train
# (valid loss rises from update 258 on; at lr 1e-3 too), the pre-norm one does
DEEP=(model=transformer_small model.encoder_layers=6 model.decoder_layers=6 model.normalize_before=true)
DROP=(+plugins.options.layerdrop.encoder_rate=0.2 +plugins.options.layerdrop.decoder_rate=0.2)

for stage in $STAGES; do
    case $stage in
        train)
            for name in ${MODELS:-ld plain small}; do
                case $name in
                    ld) args=("${DEEP[@]}" "${DROP[@]}") ;;
                    plain) args=("${DEEP[@]}") ;;
                    small) args=(model=transformer_small) ;;
                    # LayerDrop 0.2 with the dropout lowered to 0.1: is the 6+6 model over-regularised?
                    ld-dropout01) args=("${DEEP[@]}" "${DROP[@]}" model.dropout=0.1) ;;
                    # LayerDrop 0.5: on average the 3+3 that every-other pruning keeps (Fan et al.'s
                    # advice for pruning to half depth)
                    ld05) args=("${DEEP[@]}" +plugins.options.layerdrop.encoder_rate=0.5 +plugins.options.layerdrop.decoder_rate=0.5) ;;
                    # transformer_small pre-norm: the reference at half depth with the 6+6 models' norms
                    small-prenorm) args=(model=transformer_small model.normalize_before=true) ;;
                    # late LayerDrop: the plain model's training, then the last updates with LayerDrop
                    # (learn first, then robustness to missing blocks)
                    ld-late) args=("${DEEP[@]}" +plugins.options.layerdrop.encoder_rate="${LATE_RATE:-0.5}"
                                   +plugins.options.layerdrop.decoder_rate="${LATE_RATE:-0.5}"
                                   +plugins.options.layerdrop.start_update="${LATE_START:-2000}") ;;
                    # aligned late LayerDrop: from update LATE_START on, a share SUB_RATE of the updates trains
                    # only the every-other sub-network (3+3; or one of 2+2, 3+3, 4+4), the rest the whole model
                    ld-sub3|ld-sub234) depths=$([ "$name" = ld-sub3 ] && echo "[3]" || echo "[2,3,4]")
                                   args=("${DEEP[@]}" +plugins.options.layerdrop.subnet_rate="${SUB_RATE:-0.5}"
                                   +plugins.options.layerdrop.subnet_depths="$depths"
                                   +plugins.options.layerdrop.start_update="${LATE_START:-2000}") ;;
                    *) echo "unknown model $name" >&2; exit 2 ;;
                esac
                if [ -f "$RUNS/$name/seconds" ]; then echo "$RUNS/$name: done"; continue; fi
                start=$(date +%s)
                toolkit-train task=multi30k_de_en task.data="$DATA" "${args[@]}" common.threads="$THREADS" \
                    optimization.max_update="$UPDATES" optimization.max_time_minutes=0 \
                    checkpoint.save_dir="$RUNS/$name" common.log_interval=100
                echo $(( $(date +%s) - start )) > "$RUNS/$name/seconds"
            done ;;
        speed)
            for round in 1 2; do
                for name in plain ld; do
                    extra=$([ "$name" = ld ] && echo "${DROP[*]}" || true)
                    echo "round $round: $name"
                    # shellcheck disable=SC2086
                    python scripts/benchmark_train.py --data "$DATA" --source-lang de --target-lang en \
                        --arch transformer_small --max-tokens 2048 --threads "$THREADS" --warmup 5 --steps 30 \
                        --workdir "$RUNS/benchmark" "${DEEP[@]:1}" $extra
                done
            done ;;
        results)
            python -m layerdrop.results ld="$RUNS/ld/checkpoint_last.pt" plain="$RUNS/plain/checkpoint_last.pt" \
                small="$RUNS/small/checkpoint_last.pt@as-is" --data "$DATA" --threads "$THREADS" \
                --output "$RUNS/results.json" ;;
        plot)
            python -m layerdrop.plot "$RUNS/results.json" --output "$HERE/../bleu_vs_depth.png" ;;
        *) echo "unknown stage $stage (train, speed, results, plot)" >&2; exit 2 ;;
    esac
done
