#!/usr/bin/env bash
# Decoding speed of this working tree against another commit's code, in alternating processes
# (the same checkpoints, sentences and settings), so a change to the decoder is measured side by
# side with what it replaced.
# Usage: scripts/benchmark_revisions.sh REV DATA CHECKPOINT [CHECKPOINT ...]
#   REV: the commit to compare with (checked out into a temporary worktree, removed at the end);
#   DATA: a folder with test.de and test.en.
# Environment: ROUNDS (3), BEAM (5), BATCH (64), THREADS (2), FIRST (rev or tree: which runs first
#              in each round; alternate it between calls to see order effects).
# Prints each run's sentences/s, BLEU and peak memory, labelled "REV" or "tree".
set -euo pipefail
REV=${1:?commit to compare with}
DATA=${2:?data folder with test.de and test.en}
shift 2
[ $# -gt 0 ] || { echo "give at least one checkpoint" >&2; exit 2; }
for checkpoint in "$@"; do [ -f "$checkpoint" ] || { echo "no such checkpoint: $checkpoint" >&2; exit 2; }; done
HERE=$(cd "$(dirname "$0")/.." && pwd)
BASE=$(mktemp -d)
trap 'git -C "$HERE" worktree remove --force "$BASE"; rm -f "$BASE.err"' EXIT
git -C "$HERE" worktree add --detach --force -q "$BASE" "$REV"
order=("$BASE" "$HERE")
if [ "${FIRST:-rev}" = tree ]; then order=("$HERE" "$BASE"); fi
for round in $(seq "${ROUNDS:-3}"); do
    for checkpoint in "$@"; do
        for tree in "${order[@]}"; do
            label=$([ "$tree" = "$HERE" ] && echo tree || echo "$REV")
            if ! out=$(PYTHONPATH=$tree python "$tree/scripts/benchmark_generate.py" --checkpoint "$checkpoint" \
                    --source "$DATA/test.de" --reference "$DATA/test.en" --beam "${BEAM:-5}" \
                    --batch "${BATCH:-64}" --threads "${THREADS:-2}" 2>"$BASE.err"); then
                cat "$BASE.err" >&2; exit 1
            fi
            grep -E "sentences/s|BLEU" <<<"$out" | sed "s|^toolkit|round $round $label $(basename "$checkpoint")|"
        done
    done
done
