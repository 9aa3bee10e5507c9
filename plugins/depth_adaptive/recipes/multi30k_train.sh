#!/usr/bin/env bash
# Train the Multi30k de->en models of the depth-adaptive tables, each for the same number of
# updates: batches of 1,024 tokens (half the recipe's, so that six models train in one CPU
# session), lr 1e-3 with 400 warm-up updates and inverse-sqrt decay, the last checkpoint kept.
# Usage: plugins/depth_adaptive/recipes/multi30k_train.sh DATA RUNS [MODEL ...]
#   MODEL: depth1 depth2 depth3 depth6 (baselines: transformer_small with an n-block decoder),
#          aligned, mixed (transformer_depth_adaptive_small, criterion depth_adaptive),
#          aligned_low (aligned with block weights 6,5,4,3,2,1: the lower blocks weigh more),
#          mixed_distill, aligned_low_distill (mixed, aligned_low with self-distillation: exits
#          below the last also learn the last block's distribution, weight BETA),
#          halting (a geometric halting classifier trained for HALTING_UPDATES on the aligned
#          model, everything else frozen), halting_RUN (the same on the model of RUN, e.g.
#          halting_mixed), halting_RUN@TAG (the same, saved as RUNS/halting_RUN@TAG, for
#          variants set by HALTING_ARGS); default all but aligned_low, in that order.
# Environment: UPDATES (2000), THREADS (2), HALTING_FROM (aligned: the model halting starts
#              from), SEED (1: common.seed, for repeats of a run in another RUNS folder),
#              HALTING_UPDATES (500), HALTING_ARGS (extra overrides of halting runs, e.g.
#              "criterion.oracle_lambda=0.05 criterion.oracle=correctness"), BETA (0.5: the
#              *_distill runs' criterion.exit_distill_weight), DISTILL_START (0: their
#              criterion.exit_distill_start).
#              Each run's wall-clock goes to RUNS/MODEL/seconds.
set -euo pipefail
DATA=${1:?data folder}
RUNS=${2:?runs folder}
shift 2
MODELS=${*:-depth1 depth2 depth3 depth6 aligned mixed halting}
UPDATES=${UPDATES:-2000}
HALTING_UPDATES=${HALTING_UPDATES:-500}
THREADS=${THREADS:-2}

for name in $MODELS; do
    case $name in
        depth[0-9]) args=(model=transformer_small "model.decoder_layers=${name#depth}") ;;
        aligned) args=(model=transformer_depth_adaptive_small criterion=depth_adaptive) ;;
        aligned_low) args=(model=transformer_depth_adaptive_small criterion=depth_adaptive
                           "criterion.block_weights=[6,5,4,3,2,1]") ;;
        mixed) args=(model=transformer_depth_adaptive_small criterion=depth_adaptive criterion.mode=mixed
                     criterion.samples=3) ;;
        aligned_low_distill) args=(model=transformer_depth_adaptive_small criterion=depth_adaptive
                                   "criterion.block_weights=[6,5,4,3,2,1]" criterion.exit_distill_weight="${BETA:-0.5}"
                                   criterion.exit_distill_start="${DISTILL_START:-0}") ;;
        mixed_distill) args=(model=transformer_depth_adaptive_small criterion=depth_adaptive criterion.mode=mixed
                             criterion.samples=3 criterion.exit_distill_weight="${BETA:-0.5}"
                             criterion.exit_distill_start="${DISTILL_START:-0}") ;;
        halting|halting_*|halting@*)  # halting_RUN[@TAG] starts from RUN, halting from HALTING_FROM
            from=${name%%@*}; from=${from#halting}; from=${from#_}; from=${from:-${HALTING_FROM:-aligned}}
            args=(model=transformer_depth_adaptive_small criterion=depth_adaptive
                       +plugins.options.depth_adaptive.halting=token_geometric
                       +plugins.options.depth_adaptive.train_only_halting=true
                       checkpoint.finetune_from="$RUNS/$from/checkpoint_last.pt" checkpoint.finetune_strict=false
                       ${HALTING_ARGS:-}) ;;
        *) echo "unknown model $name (depthN, aligned, aligned_low, mixed, *_distill, halting, halting_RUN)" >&2; exit 2 ;;
    esac
    if [ -f "$RUNS/$name/seconds" ]; then echo "$RUNS/$name: done"; continue; fi
    start=$(date +%s)
    toolkit-train task=multi30k_de_en task.data="$DATA" "${args[@]}" common.threads="$THREADS" common.seed="${SEED:-1}" \
        optimization.max_update="$([[ "$name" = halting* ]] && echo "$HALTING_UPDATES" || echo "$UPDATES")" optimization.max_time_minutes=0 dataset.max_tokens=1024 optim.lr=1e-3 \
        checkpoint.save_dir="$RUNS/$name" common.log_interval=100
    echo $(( $(date +%s) - start )) > "$RUNS/$name/seconds"
done
