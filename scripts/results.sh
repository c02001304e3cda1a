#!/usr/bin/env bash
# Every result in the README, with the embedded Gemma 3 270M and our default SAEs, each over
# three seeds (the seed draws the train/validation/test samples and the bootstrap). A run whose
# results are already in runs/ is skipped, so the script resumes where it stopped.
#
#   bash scripts/results.sh [step ...]
#
# steps (default: all, in this order):
#   evidence   generation-level rewards where steering should work: `food` and `sentiment` ($TASKS),
#              CorrSteer-A against random features and shuffled rewards (3 draws each)
#   benchmarks BBQ ambiguous, BBQ disambiguated, MMLU: CorrSteer-A, then CorrSteer-P on the same
#              collection (copied, --resume), n_train 1000, n_val 50, n_test 200
#   sign       the coefficient of negative features: the paper's mean over rewarded samples vs the
#              mean over unrewarded ones, as the negative-only control on food and sentiment (same
#              collection); the first run also steers CorrSteer-A at 0.5x and 2x its coefficients
#   strength   --scale auto (the grid on 50 validation samples, fluency-guarded) on food and sentiment
#   xstest     the sign comparison on XSTest with the instruct model SmolLM2 and its default SAEs; its 450
#              prompts are exactly its splits, so the seed also carves them (--task-option split_seed=SEED):
#              without it another seed only reorders the same prompts (README)
#   width      the default SAEs against the 8,192-latent ones at layers 3 and 6 on $TASKS (CorrSteer-A and one
#              random draw, the same samples): trains those two layers of `default-8k` first if they are not
#              cached (1-2 h on 2 cores); they fail the quality bar (31.7% and 55.9% dead latents), so
#              they are used by path, knowingly; into runs/width; only when named
#   sae16k     evidence again with the larger SAE set `--sae default-16k` (trained and cached by the first
#              run: 1-2 h on 2 cores; as defined its layer 3 fails the quality bar, README), into
#              runs/evidence16k; only when named
# Then `python scripts/summarize.py` prints the README's tables from runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
CORRSTEER=${CORRSTEER:-.venv/bin/corrsteer}
SEEDS=${SEEDS:-0 1 2}
TASKS=${TASKS:-food sentiment}   # the generation-level tasks of evidence, sign and strength
COMMON=(--model gemma-3-270m --sae default --no-progress)
COMMON16K=(--model gemma-3-270m --sae default-16k --no-progress)

done_in() { [ -f "$1/results.json" ] || [ -f "$1/controls.json" ]; }
reuse_collection() {  # reuse_collection FROM TO: a second selection of the same collection
    mkdir -p "$2" && [ -d "$2/collection" ] || cp -r "$1/collection" "$2/"
}

for step in "${@:-evidence benchmarks sign strength xstest}"; do
    for s in $step; do
        case "$s" in
        evidence|sae16k)
            if [ "$s" = evidence ]; then folder=evidence common=("${COMMON[@]}"); else folder=evidence16k common=("${COMMON16K[@]}"); fi
            for seed in $SEEDS; do
                for t in $TASKS; do
                    if [ "$t" = food ]; then n=(--n-train 200 --n-test 100); else n=(--n-train 400 --n-test 200); fi
                    out=runs/$folder/$t-seed$seed
                    done_in "$out" || "$CORRSTEER" controls --task "$t" --mode all "${n[@]}" \
                        --methods random,shuffled --draws 3 --batch-size 32 --seed "$seed" "${common[@]}" --out "$out"
                done
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
            # the negative-only control under each rule for a negative feature's coefficient, on the same
            # collection; the mean_pos run also steers CorrSteer-A at 0.5x and 2x (the strength curve on test)
            for t in $TASKS; do
                for seed in $SEEDS; do
                    if [ "$t" = food ]; then n=(--n-train 200 --n-test 100); else n=(--n-train 400 --n-test 200); fi
                    pos=runs/sign/$t-mean_pos-seed$seed neg=runs/sign/$t-mean_neg-seed$seed
                    args=(--task "$t" --mode all --draws 1 --batch-size 32 --seed "$seed" "${n[@]}" "${COMMON[@]}")
                    done_in "$pos" || "$CORRSTEER" controls "${args[@]}" --methods negative,scale-0.5,scale-2 \
                        --negative-coefficient mean_pos --out "$pos"
                    done_in "$neg" || { reuse_collection "$pos" "$neg"
                        "$CORRSTEER" controls "${args[@]}" --methods negative --negative-coefficient mean_neg \
                            --out "$neg" --resume; }
                done
            done ;;
        strength)
            for t in $TASKS; do
                for seed in $SEEDS; do
                    if [ "$t" = food ]; then n=(--n-train 200 --n-test 100); else n=(--n-train 400 --n-test 200); fi
                    out=runs/strength/$t-auto-seed$seed
                    done_in "$out" || "$CORRSTEER" run --task "$t" --mode all --scale auto --n-val 50 "${n[@]}" \
                        --batch-size 32 --seed "$seed" "${COMMON[@]}" --out "$out"
                done
            done ;;
        xstest)
            for seed in $SEEDS; do
                pos=runs/xstest/mean_pos-seed$seed neg=runs/xstest/mean_neg-seed$seed
                args=(--task xstest --model smollm2-135m-instruct --sae default --layers 6,12,18,24 --mode pruned
                      --n-train 180 --n-val 90 --n-test 180 --seed "$seed" --task-option "split_seed=$seed" --no-progress)
                done_in "$pos" || "$CORRSTEER" run "${args[@]}" --negative-coefficient mean_pos --out "$pos"
                done_in "$neg" || { reuse_collection "$pos" "$neg"
                    "$CORRSTEER" run "${args[@]}" --negative-coefficient mean_neg --out "$neg" --resume; }
            done ;;
        width)
            # default-8k's cache folder (its settings hash; tests/test_default_saes.py keeps the two in step)
            wide=${CORRSTEER_CACHE:-$HOME/.cache/corrsteer}/saes/gemma-3-270m/261c1b0706a29e80
            [ -f "$wide/layer_6/cfg.json" ] || "$(dirname "$CORRSTEER")/python" -c "if True:
                from corrsteer.models import load_model
                from corrsteer.sae.defaults import SETS, train_default_saes
                model, tok = load_model('gemma-3-270m')
                train_default_saes(model, tok, [3, 6], settings=SETS['default-8k'], quality=None, progress=False)"
            for seed in $SEEDS; do
                for t in $TASKS; do
                    if [ "$t" = food ]; then n=(--n-train 200 --n-test 100); else n=(--n-train 400 --n-test 200); fi
                    for sae in default 8k; do
                        out=runs/width/$sae-$t-seed$seed
                        if [ $sae = default ]; then saes=default; else saes=$wide/layer_3,$wide/layer_6; fi
                        done_in "$out" || "$CORRSTEER" controls --task "$t" --mode all "${n[@]}" --methods random \
                            --draws 1 --batch-size 32 --seed "$seed" --model gemma-3-270m --sae "$saes" --layers 3,6 \
                            --no-progress --out "$out"
                    done
                done
            done ;;
        *) echo "unknown step $s (evidence benchmarks sign strength xstest width sae16k)" >&2; exit 2 ;;
        esac
    done
done
