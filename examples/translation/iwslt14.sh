#!/usr/bin/env bash
# IWSLT'14 De-En, fairseq-style: prepare the standard split from the local IWSLT 2014 release,
# learn sentencepiece on the Moses-tokenized lowercased text, train transformer_iwslt_de_en,
# average the last 5 epochs and report tokenized BLEU on test (the IWSLT'14 convention).
# Usage: examples/translation/iwslt14.sh ORIG_DE_EN_FOLDER [RUN]   (a GPU is advised)
set -euo pipefail
ORIG=$1
RUN=${2:-runs/iwslt14-de-en}
DATA=$RUN/text

python examples/translation/prepare_iwslt14.py --orig "$ORIG" --out "$DATA"
toolkit-train task=iwslt14_de_en task.data="$DATA" model=transformer_iwslt_de_en \
    optim.lr=5e-4 optim.weight_decay=1e-4 lr_scheduler.warmup_updates=4000 dataset.max_tokens=4096 \
    optimization.max_epoch=50 checkpoint.keep_last_epochs=5 checkpoint.save_dir="$RUN"
python scripts/average_checkpoints.py --dir "$RUN" --last 5 --output "$RUN/checkpoint_avg5.pt"
toolkit-generate path="$RUN/checkpoint_avg5.pt" data="$DATA" split=test generation.beam=5 max_sentences=128
