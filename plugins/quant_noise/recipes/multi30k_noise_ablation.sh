#!/usr/bin/env bash
# Which part of Quant-Noise slows transformer_small's learning on Multi30k de->en: one epoch
# (258 updates of the recipe's 2,048-token batches, lr 2e-3) per variant, then its validation
# perplexity (noise is off in eval mode). Every variant has the same seed and batches.
# Usage: plugins/quant_noise/recipes/multi30k_noise_ablation.sh DATA RUNS [VARIANT ...]
#   VARIANT: plain (no noise); all (iPQ noise 0.1 on every Linear and Embedding, the table's
#   "noise"); through-mask (all, the gradient through the mask instead of straight through);
#   embeddings (0.1 on the shared embedding table and the output projection only); layers (0.1 on
#   the blocks' Linears only); attention (0.1 on the attention projections only); ffn (0.1 on the
#   feed-forward Linears only); rate05 (0.05 on every weight); dropout01 (all, model dropout 0.1
#   instead of transformer_small's 0.2). Default: all nine.
# Environment: UPDATES (258: one epoch), THREADS (1). Prints "VARIANT ppl" lines, also written
# to RUNS/ppl.txt; each run's log is RUNS/VARIANT.log.
set -euo pipefail
DATA=${1:?data folder}
RUNS=${2:?runs folder}
shift 2
VARIANTS=${*:-plain all through-mask embeddings layers attention ffn rate05 dropout01}
UPDATES=${UPDATES:-258}
export OMP_NUM_THREADS=${THREADS:-1}
Q=+plugins.options.quant_noise
mkdir -p "$RUNS"
for name in $VARIANTS; do
    case $name in
        plain) args=() ;;
        all) args=("$Q.linear_rate=0.1" "$Q.embedding_rate=0.1") ;;
        through-mask) args=("$Q.linear_rate=0.1" "$Q.embedding_rate=0.1" "$Q.straight_through=false") ;;
        embeddings) args=("$Q.linear_rate=0.1" "$Q.embedding_rate=0.1" "$Q.modules='embed_tokens|output_projection'") ;;
        layers) args=("$Q.linear_rate=0.1" "$Q.embedding_rate=0.1" "$Q.modules=layers") ;;
        attention) args=("$Q.linear_rate=0.1" "$Q.modules='(qkv|q|kv|out)_proj'") ;;
        ffn) args=("$Q.linear_rate=0.1" "$Q.modules='fc[12]'") ;;
        rate05) args=("$Q.linear_rate=0.05" "$Q.embedding_rate=0.05") ;;
        dropout01) args=("$Q.linear_rate=0.1" "$Q.embedding_rate=0.1" model.dropout=0.1) ;;
        *) echo "unknown variant $name" >&2; exit 2 ;;
    esac
    rm -rf "$RUNS/$name"
    toolkit-train task=multi30k_de_en task.data="$DATA" model=transformer_small ${args[@]+"${args[@]}"} \
        common.threads="$OMP_NUM_THREADS" optimization.max_update="$UPDATES" optimization.max_time_minutes=0 \
        checkpoint.save_dir="$RUNS/$name" common.log_interval=100 > "$RUNS/$name.log" 2>&1
    ppl=$(grep -oE "valid \| epoch [0-9]+ \| num_updates $UPDATES \|.* ppl [0-9.e+]+" "$RUNS/$name.log" | tail -n 1 | sed 's/.* ppl //')
    echo "$name ${ppl:-?}" | tee -a "$RUNS/ppl.txt"
done
