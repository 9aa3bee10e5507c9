#!/usr/bin/env bash
# Train the two Multi30k de->en models of the quant_noise table: transformer_small with the
# recipe's settings (toolkit/conf/recipe/multi30k_de_en.yaml: 2,048-token batches, lr 2e-3),
# for a fixed number of updates (the recipe's 40 minutes give about 3,000 on 2 cores) so that
# both see the same data, then the last 3 epoch checkpoints averaged.
# Usage: plugins/quant_noise/recipes/multi30k_train.sh DATA RUNS [MODEL ...]
#   MODEL: plain (no noise), noise (Quant-Noise, iPQ scheme, rate RATE on Linear and Embedding
#          weights, 8-weight blocks); noise-ft and plain-ft: plain's averaged checkpoint
#          fine-tuned FT_UPDATES more updates (fixed lr 1e-4) with and without Quant-Noise (the
#          paper's fine-tuning use; their last checkpoint is kept as checkpoint_avg3.pt's stand-in
#          checkpoint_final.pt); noise-emb-ft: the same fine-tuning with Quant-Noise on the
#          embedding tables and the output projection only (where ipq8 loses half of its BLEU);
#          noise-emb: Quant-Noise on those two modules only, from scratch for UPDATES updates;
#          centroid-ft: the fine-tuning with the exact product-quantization noise (scheme
#          centroid: a noised block takes its nearest of 256 centroids, k-means every 100 uses);
#          centroid: that noise from scratch for UPDATES updates; default plain noise, in that order.
# Environment: UPDATES (3000), FT_UPDATES (300), FT_LR (1e-4), THREADS (2), RATE (0.1), SEED (1:
# common.seed, e.g. a second plain model for an ensemble), BLOCK (8: the noise's block size, 4 for
# the ipq4 row). Wall-clock goes to RUNS/MODEL/seconds.
set -euo pipefail
DATA=${1:?data folder}
RUNS=${2:?runs folder}
shift 2
MODELS=${*:-plain noise}
UPDATES=${UPDATES:-3000}
FT_UPDATES=${FT_UPDATES:-300}
FT_LR=${FT_LR:-1e-4}
THREADS=${THREADS:-2}
RATE=${RATE:-0.1}
BLOCK=${BLOCK:-8}

BLOCKS=(+plugins.options.quant_noise.linear_block_size="$BLOCK" +plugins.options.quant_noise.embedding_block_size="$BLOCK")
NOISE=(+plugins.options.quant_noise.scheme=ipq +plugins.options.quant_noise.linear_rate="$RATE"
       +plugins.options.quant_noise.embedding_rate="$RATE" "${BLOCKS[@]}")
CENTROID=(+plugins.options.quant_noise.scheme=centroid +plugins.options.quant_noise.linear_rate="$RATE"
          +plugins.options.quant_noise.embedding_rate="$RATE" "${BLOCKS[@]}")
EMBEDDINGS_ONLY=("+plugins.options.quant_noise.modules='embed_tokens|output_projection'")
FINETUNE=(checkpoint.finetune_from="$RUNS/plain/checkpoint_avg3.pt" lr_scheduler=fixed
          lr_scheduler.warmup_updates=0 optim.lr="$FT_LR")
for name in $MODELS; do
    updates=$UPDATES
    case $name in
        plain) args=() ;;
        noise) args=("${NOISE[@]}") ;;
        noise-ft) args=("${NOISE[@]}" "${FINETUNE[@]}"); updates=$FT_UPDATES ;;
        noise-emb) args=("${NOISE[@]}" "${EMBEDDINGS_ONLY[@]}") ;;
        noise-emb-ft) args=("${NOISE[@]}" "${EMBEDDINGS_ONLY[@]}" "${FINETUNE[@]}"); updates=$FT_UPDATES ;;
        centroid) args=("${CENTROID[@]}") ;;
        centroid-ft) args=("${CENTROID[@]}" "${FINETUNE[@]}"); updates=$FT_UPDATES ;;
        plain-ft) args=("${FINETUNE[@]}"); updates=$FT_UPDATES ;;
        *) echo "unknown model $name (plain, noise, noise-emb, noise-ft, noise-emb-ft, centroid, centroid-ft, plain-ft)" >&2; exit 2 ;;
    esac
    if [ -f "$RUNS/$name/seconds" ]; then echo "$RUNS/$name: done"; continue; fi
    start=$(date +%s)
    toolkit-train task=multi30k_de_en task.data="$DATA" model=transformer_small ${args[@]+"${args[@]}"} \
        common.threads="$THREADS" common.seed="${SEED:-1}" optimization.max_update="$updates" optimization.max_time_minutes=0 \
        checkpoint.save_dir="$RUNS/$name" common.log_interval=100
    echo $(( $(date +%s) - start )) > "$RUNS/$name/seconds"
    if [ "$updates" = "$UPDATES" ]; then
        python scripts/average_checkpoints.py --dir "$RUNS/$name" --last 3 --output "$RUNS/$name/checkpoint_avg3.pt"
    else
        cp "$RUNS/$name/checkpoint_last.pt" "$RUNS/$name/checkpoint_final.pt"
    fi
done
