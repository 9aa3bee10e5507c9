#!/usr/bin/env bash
# Quantize the averaged checkpoints of multi30k_train.sh: int8 (one shot); iterative iPQ with 256
# centroids of 4-weight and of 8-weight blocks (two compression rates); ipq+int8 (8-weight
# blocks). Each iPQ stage (feed-forward, attention, embeddings) is followed by FINETUNE updates.
# Row ipq8e (not in the default SCHEMES) is ipq8 with EMBEDDING_CENTROIDS (2048) centroids for the
# shared embedding table and output layer, where ipq8 loses half of its BLEU.
# Usage: plugins/quant_noise/recipes/multi30k_quantize.sh RUNS [MODEL ...]   (default: plain noise)
# Environment: FINETUNE (100), THREADS (2), SCHEMES (all four rows: int8 ipq4 ipq8 ipq8+int8),
# FLOAT (checkpoint_avg3.pt; the fine-tuned models of multi30k_train.sh: checkpoint_final.pt). Writes RUNS/MODEL/{int8,ipq4,ipq8,ipq8+int8,ipq8e}.pt and
# each command's printed sizes to RUNS/MODEL/quantize.log.
set -euo pipefail
RUNS=${1:?runs folder}
shift
MODELS=${*:-plain noise}
FINETUNE=${FINETUNE:-100}
THREADS=${THREADS:-2}
SCHEMES=${SCHEMES:-int8 ipq4 ipq8 ipq8+int8}
FLOAT=${FLOAT:-checkpoint_avg3.pt}
EMBEDDING_CENTROIDS=${EMBEDDING_CENTROIDS:-2048}

for name in $MODELS; do
    ckpt="$RUNS/$name/$FLOAT"
    for row in int8:int8:8:256 ipq4:ipq:4:256 ipq8:ipq:8:256 ipq8+int8:ipq+int8:8:256 ipq8e:ipq:8:$EMBEDDING_CENTROIDS; do
        IFS=: read -r out scheme block table <<< "$row"
        [[ " $SCHEMES " == *" $out "* ]] || continue
        updates=$([ "$scheme" = int8 ] && echo 0 || echo "$FINETUNE")
        if [ -f "$RUNS/$name/$out.pt" ]; then echo "$RUNS/$name/$out.pt: done"; continue; fi
        rm -rf "$RUNS/$name/finetune-$out"
        toolkit-quantize "$ckpt" "$RUNS/$name/$out.pt" --scheme "$scheme" --block-size "$block" \
            --embedding-block-size "$block" --centroids 256 --embedding-centroids "$table" --finetune-updates "$updates" \
            --workdir "$RUNS/$name/finetune-$out" --threads "$THREADS" 2>&1 | tee -a "$RUNS/$name/quantize.log"
    done
done
