#!/usr/bin/env bash
# The README's label, SAE-comparison, controls and debiasing tables with the embedded
# Gemma 3 270M and our default SAEs. The debiasing step steers with the BBQ-ambiguous
# CorrSteer-A selection, so run `bash scripts/results.sh bbq_ambig` first.
#
#   bash scripts/bias.sh [step ...]   # steps: labels compare controls debias contrast controls-disambig
#                                     # default: all of them, in that order
set -euo pipefail
cd "$(dirname "$0")/.."
CORRSTEER=${CORRSTEER:-.venv/bin/corrsteer}
for step in "${@:-labels compare controls debias contrast controls-disambig}"; do
    for s in $step; do
        case "$s" in
            labels)   "$CORRSTEER" labels --dataset emgsd --n 2000 --out runs/labels_emgsd --no-progress ;;
            compare)  "$CORRSTEER" compare-saes --dataset emgsd --n 2000 --sae generic=default --sae emgsd=train \
                          --out runs/compare_emgsd --no-progress ;;
            controls) "$CORRSTEER" controls --task bbq_ambig --n-train 1000 --n-val 50 --n-test 300 --mode all \
                          --seed 0 --out runs/controls_bbq_ambig --no-progress ;;
            debias)   "$CORRSTEER" debias --selection runs/bbq_ambig-all/selection --labels runs/labels_emgsd \
                          --n-test 300 --out runs/debias --no-progress ;;
            contrast) "$CORRSTEER" labels --dataset emgsd --keep-labels stereotype,neutral --n 1200 \
                          --out runs/labels_emgsd_contrast --no-progress
                      "$CORRSTEER" debias --labels runs/labels_emgsd_contrast --n-test 300 --out runs/debias_contrast \
                          --no-progress ;;
            controls-disambig) "$CORRSTEER" controls --task bbq_disambig --n-train 1000 --n-val 50 --n-test 300 \
                          --mode all --seed 0 --out runs/controls_bbq_disambig --no-progress ;;
            *) echo "unknown step $s (labels compare controls debias contrast controls-disambig)" >&2; exit 2 ;;
        esac
    done
done
