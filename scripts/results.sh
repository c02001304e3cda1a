#!/usr/bin/env bash
# The README's results table: CorrSteer-A (all) and CorrSteer-P (pruned) on BBQ ambiguous,
# BBQ disambiguated and MMLU with the embedded Gemma 3 270M and our default SAEs.
# One collection pass per task (1,000 training samples) serves both modes: the pruned run
# resumes from a copy of the finished collection, so it only validates and evaluates. On BBQ
# a third run validates pruned on 200 samples instead of 50.
#
#   bash scripts/results.sh [task ...]      # default: bbq_ambig bbq_disambig mmlu
set -euo pipefail
cd "$(dirname "$0")/.."
CORRSTEER=${CORRSTEER:-.venv/bin/corrsteer}
COMMON=(--model gemma-3-270m --sae default --n-train 1000 --n-val 50 --n-test 200 --seed 0 --no-progress)
for task in "${@:-bbq_ambig bbq_disambig mmlu}"; do
    for t in $task; do
        "$CORRSTEER" run --task "$t" --mode all "${COMMON[@]}" --out "runs/$t-all"
        mkdir -p "runs/$t-pruned" && cp -r "runs/$t-all/collection" "runs/$t-pruned/"
        "$CORRSTEER" run --task "$t" --mode pruned "${COMMON[@]}" --out "runs/$t-pruned" --resume
        case "$t" in
            bbq_*)  # pruned again, validated on 200 samples instead of 50 (same collection)
                mkdir -p "runs/$t-pruned-val200" && cp -r "runs/$t-all/collection" "runs/$t-pruned-val200/"
                "$CORRSTEER" run --task "$t" --mode pruned "${COMMON[@]}" --n-val 200 --out "runs/$t-pruned-val200" \
                    --resume ;;
        esac
    done
done
