#!/usr/bin/env bash
# Every result in the README, with the embedded Gemma 3 270M and our default SAEs, each over
# three seeds (the seed draws the train/validation/test samples and the bootstrap). A run whose
# results are already in runs/ is skipped, so the script resumes where it stopped.
#
#   bash scripts/results.sh [step ...]
#
# steps (default: all, in this order):
#   evidence   generation-level rewards where steering should work: `food` and `sentiment`,
#              CorrSteer-A against random features and shuffled rewards (3 draws each)
#   benchmarks BBQ ambiguous, BBQ disambiguated, MMLU: CorrSteer-A, then CorrSteer-P on the same
#              collection (copied, --resume), n_train 1000, n_val 50, n_test 200
#   sign       the coefficient of negative features: the paper's mean over rewarded samples vs the
#              mean over unrewarded ones, CorrSteer-P on food and sentiment (same collection)
#   strength   --scale auto (the grid on the validation split, fluency-guarded) on food and sentiment
#   xstest     the sign comparison on XSTest with the instruct model SmolLM2 and its default SAEs
# Then `python scripts/summarize.py` prints the README's tables from runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
CORRSTEER=${CORRSTEER:-.venv/bin/corrsteer}
SEEDS=${SEEDS:-0 1 2}
COMMON=(--model gemma-3-270m --sae default --no-progress)

done_in() { [ -f "$1/results.json" ] || [ -f "$1/controls.json" ]; }
reuse_collection() {  # reuse_collection FROM TO: a second selection of the same collection
    mkdir -p "$2" && [ -d "$2/collection" ] || cp -r "$1/collection" "$2/"
}

for step in "${@:-evidence benchmarks sign strength xstest}"; do
    for s in $step; do
        case "$s" in
        evidence)
            for seed in $SEEDS; do
                out=runs/evidence/food-seed$seed
                done_in "$out" || "$CORRSTEER" controls --task food --mode all --n-train 200 --n-test 100 \
                    --methods random,shuffled --draws 3 --batch-size 32 --seed "$seed" "${COMMON[@]}" --out "$out"
                out=runs/evidence/sentiment-seed$seed
                done_in "$out" || "$CORRSTEER" controls --task sentiment --mode all --n-train 400 --n-test 200 \
                    --methods random,shuffled --draws 3 --batch-size 32 --seed "$seed" "${COMMON[@]}" --out "$out"
            done ;;
        benchmarks)
            for t in bbq_ambig bbq_disambig mmlu; do
                for seed in $SEEDS; do
                    all=runs/benchmarks/$t-all-seed$seed pruned=runs/benchmarks/$t-pruned-seed$seed
                    args=(--task "$t" --n-train 1000 --n-val 50 --n-test 200 --seed "$seed" "${COMMON[@]}")
                    done_in "$all" || "$CORRSTEER" run --mode all "${args[@]}" --out "$all"
                    done_in "$pruned" || { reuse_collection "$all" "$pruned"
                        "$CORRSTEER" run --mode pruned "${args[@]}" --out "$pruned" --resume; }
                done
            done ;;
        sign)
            for t in food sentiment; do
                for seed in $SEEDS; do
                    pos=runs/sign/$t-mean_pos-seed$seed neg=runs/sign/$t-mean_neg-seed$seed
                    args=(--task "$t" --mode pruned --n-train 400 --n-val 100 --n-test 200 --batch-size 32
                          --seed "$seed" "${COMMON[@]}")
                    done_in "$pos" || "$CORRSTEER" run "${args[@]}" --negative-coefficient mean_pos --out "$pos"
                    done_in "$neg" || { reuse_collection "$pos" "$neg"
                        "$CORRSTEER" run "${args[@]}" --negative-coefficient mean_neg --out "$neg" --resume; }
                done
            done ;;
        strength)
            for t in food sentiment; do
                for seed in $SEEDS; do
                    out=runs/strength/$t-auto-seed$seed
                    done_in "$out" || { reuse_collection "runs/sign/$t-mean_pos-seed$seed" "$out"
                        "$CORRSTEER" run --task "$t" --mode all --scale auto --n-train 400 --n-val 100 --n-test 200 \
                            --batch-size 32 --seed "$seed" "${COMMON[@]}" --out "$out" --resume; }
                done
            done ;;
        xstest)
            for seed in $SEEDS; do
                pos=runs/xstest/mean_pos-seed$seed neg=runs/xstest/mean_neg-seed$seed
                args=(--task xstest --model smollm2-135m-instruct --sae default --layers 6,12,18,24 --mode pruned
                      --n-train 180 --n-val 90 --n-test 180 --seed "$seed" --no-progress)
                done_in "$pos" || "$CORRSTEER" run "${args[@]}" --negative-coefficient mean_pos --out "$pos"
                done_in "$neg" || { reuse_collection "$pos" "$neg"
                    "$CORRSTEER" run "${args[@]}" --negative-coefficient mean_neg --out "$neg" --resume; }
            done ;;
        *) echo "unknown step $s (evidence benchmarks sign strength xstest)" >&2; exit 2 ;;
        esac
    done
done
