#!/usr/bin/env bash
# Multi30k de->en (test2016) with transformer_small on CPU: train 40 minutes, average the last 3
# epoch checkpoints, score with sacreBLEU and time beam-5 batch-64 decoding.
# Usage: examples/translation/multi30k.sh [DATA] [RUN]
set -euo pipefail
DATA=${1:-../shared/data/multi30k-task1}
RUN=${2:-runs/multi30k-de-en}

toolkit-train task=multi30k_de_en task.data="$DATA" model=transformer_small common.threads=2 \
    checkpoint.save_dir="$RUN" common.log_interval=100   # settings: toolkit/conf/recipe/multi30k_de_en.yaml

python scripts/average_checkpoints.py --dir "$RUN" --last 3 --output "$RUN/checkpoint_avg3.pt"
for ckpt in checkpoint_best checkpoint_avg3; do
    toolkit-generate path="$RUN/$ckpt.pt" data="$DATA" split=test generation.beam=5 \
        max_sentences=64 threads=2 output="$RUN/$ckpt.test.en"
done
python scripts/benchmark_generate.py --checkpoint "$RUN/checkpoint_avg3.pt" --source "$DATA/test.de" \
    --reference "$DATA/test.en" --beam 5 --batch 64 --threads 2
