#!/usr/bin/env bash
# Tune exit thresholds on the validation set, then measure the anytime and adaptive tables on
# test2016 and draw the plot, for the models of multi30k_train.sh.
# Usage: plugins/depth_adaptive/recipes/multi30k_eval.sh DATA RUNS [STAGE ...]
#   STAGE: tune (toolkit-tune-exits on valid: confidence and entropy on the ALIGNED model, the
#          geometric halting threshold on each halting run: halting, halting_mixed), results
#          (test2016, decoded in this one process: run it on a quiet machine), plot; default all
#          three. Also, not in the default: speed (training target tokens/s of the depth-6
#          baseline, aligned and mixed at the training recipe's batch, alternating in two rounds
#          on a quiet machine; SPEED_MODELS picks others: aligned_distill, mixed_distill) and
#          significance (each baseline against ALIGNED cut to its depth on valid and test:
#          sacreBLEU's paired bootstrap, 1,000 resamples; outputs kept in RUNS/outputs).
# Environment: THREADS (2), SAMPLES (12 random settings per policy), LIMIT (500 valid sentences),
#              ROUNDS (1 alternating round of the adaptive comparison), ALIGNED (aligned: the
#              multi-exit run the confidence, entropy and patience policies decode), REFINE (0:
#              bisection steps of each halting threshold after the draw, --refine).
set -euo pipefail
DATA=${1:?data folder}
RUNS=${2:?runs folder}
shift 2
STAGES=${*:-tune results plot}
THREADS=${THREADS:-2}
SAMPLES=${SAMPLES:-12}
LIMIT=${LIMIT:-500}
HERE=$(dirname "$0")

for stage in $STAGES; do
    case $stage in
        tune)
            mkdir -p "$RUNS/tuned"
            halting_runs=()  # every trained halting run: halting, halting_mixed, ...
            for checkpoint in "$RUNS"/halting*/checkpoint_last.pt; do
                [ -f "$checkpoint" ] && halting_runs+=("$(basename "$(dirname "$checkpoint")")")
            done
            for name in confidence entropy ${halting_runs[@]+"${halting_runs[@]}"}; do  # tuned/NAME.json
                case $name in
                    halting*) policy=halting; model=$name ;;
                    *) policy=$name; model=${ALIGNED:-aligned} ;;
                esac
                [ -f "$RUNS/tuned/$name.json" ] && continue
                refine=()
                if [ "$policy" = halting ]; then refine=(--refine "${REFINE:-0}"); fi
                toolkit-tune-exits "$RUNS/$model/checkpoint_last.pt" --policy "$policy" --samples "$SAMPLES" \
                    --limit "$LIMIT" --source "$DATA/valid.de" --reference "$DATA/valid.en" --beam 5 --batch 64 \
                    --threads "$THREADS" --device cpu --output "$RUNS/tuned/$name.json" ${refine[@]+"${refine[@]}"}
            done ;;
        results)
            python -m depth_adaptive.results "$RUNS" --data "$DATA" --threads "$THREADS" --rounds "${ROUNDS:-1}" \
                --aligned "${ALIGNED:-aligned}" ;;
        speed)
            for round in 1 2; do
                for name in ${SPEED_MODELS:-depth6 aligned mixed}; do
                    # options before the key=value overrides: argparse takes the overrides last
                    case $name in
                        depth6) args=(--arch transformer_small model.decoder_layers=6) ;;
                        aligned) args=(--arch transformer_depth_adaptive_small criterion=depth_adaptive) ;;
                        mixed) args=(--arch transformer_depth_adaptive_small criterion=depth_adaptive
                                     criterion.mode=mixed criterion.samples=3) ;;
                        aligned_distill) args=(--arch transformer_depth_adaptive_small criterion=depth_adaptive
                                               criterion.exit_distill_weight=0.5) ;;
                        mixed_distill) args=(--arch transformer_depth_adaptive_small criterion=depth_adaptive
                                             criterion.mode=mixed criterion.samples=3 criterion.exit_distill_weight=0.5) ;;
                    esac
                    echo "round $round: $name"
                    python scripts/benchmark_train.py --data "$DATA" --source-lang de --target-lang en \
                        --max-tokens 1024 --threads "$THREADS" --warmup 5 --steps 30 --workdir "$RUNS/benchmark" \
                        "${args[@]}" optim.lr=1e-3
                done
            done ;;
        significance)
            mkdir -p "$RUNS/outputs"
            aligned=${ALIGNED:-aligned}
            for split in valid test; do
                for n in 1 2 3 6; do
                    [ -f "$RUNS/depth$n/checkpoint_last.pt" ] || continue
                    base=$RUNS/outputs/$split.depth$n.txt
                    cut=$RUNS/outputs/$split.$aligned.exit$n.txt
                    [ -f "$base" ] || OMP_NUM_THREADS=$THREADS toolkit-generate path="$RUNS/depth$n/checkpoint_last.pt" \
                        split="$split" generation.beam=5 output="$base" 2> /dev/null
                    [ -f "$cut" ] || OMP_NUM_THREADS=$THREADS toolkit-generate path="$RUNS/$aligned/checkpoint_last.pt" \
                        split="$split" generation.beam=5 generation/exit_policy=fixed_depth \
                        generation.exit_policy.block="$n" output="$cut" 2> /dev/null
                    echo "== $split: depth$n against $aligned at exit $n"
                    sacrebleu "$DATA/$split.en" -i "$base" "$cut" --paired-bs -m bleu -f text 2> /dev/null | grep "│"
                done
            done ;;
        plot)
            python -m depth_adaptive.plot "$RUNS/results.json" --output "$HERE/../bleu_vs_speed.png" ;;
        *) echo "unknown stage $stage (tune, results, plot, speed, significance)" >&2; exit 2 ;;
    esac
done
