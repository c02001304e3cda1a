#!/usr/bin/env bash
# Install corrsteer's optional extras into the virtual environment of scripts/install.sh,
# keeping torch and transformers exactly as they are.
#
#   bash scripts/install_extras.sh saelens lmeval     # SAELens and lm-evaluation-harness (wheels, ~2 min)
#   bash scripts/install_extras.sh llama              # llama-cpp-python, built from its sdist (minutes)
#   VENV=/path/to/venv bash scripts/install_extras.sh all
#
# The requirements are read from pyproject.toml ([project.optional-dependencies]) and installed
# with a constraints file that pins the installed torch and transformers: sae-lens,
# transformer-lens and lm-eval all ask for torch, and any other torch spec makes pip fetch a
# multi-GB CUDA build. llama-cpp-python compiles llama.cpp (CMake, C++; ~12 CPU-minutes): it
# builds with CMAKE_BUILD_PARALLEL_LEVEL jobs (default 2) under nice, for a portable AVX2
# target, and pip caches the wheel it builds (a second install takes seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "no virtual environment at $VENV: run scripts/install.sh first (or set VENV)" >&2
    exit 2
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
[ "$#" -gt 0 ] || set -- saelens lmeval
if [ "$1" = all ]; then set -- saelens lmeval llama; fi

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
python - "$constraints" <<'PY'
import importlib.metadata as md
import sys
with open(sys.argv[1], "w") as fh:
    for dist in ("torch", "transformers"):
        fh.write(f"{dist}=={md.version(dist).split('+')[0]}\n")
PY

requirements() {  # the requirement strings of one extra, from pyproject.toml
    python - "$1" <<'PY'
import sys
import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
name = sys.argv[1]
if name not in extras or name in ("test", "embedded"):
    sys.exit(f"unknown extra {name!r}; choose from saelens, lmeval, llama, all")
print("\n".join(extras[name]))
PY
}

for extra in "$@"; do
    mapfile -t reqs < <(requirements "$extra")
    echo "installing extra $extra: ${reqs[*]}"
    start=$SECONDS
    if [ "$extra" = llama ]; then
        # Portable x86-64 build (AVX2/FMA/F16C), not -march=native: a native build on a CPU with AMX
        # emits AMX tile instructions, which sandboxes that do not grant AMX state kill with SIGILL
        # at the first matrix product. Set CMAKE_ARGS to choose other flags.
        CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"} \
        CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} nice -n 10 \
            python -m pip install --disable-pip-version-check -q -c "$constraints" "${reqs[@]}"
    else
        python -m pip install --disable-pip-version-check -q -c "$constraints" "${reqs[@]}"
    fi
    echo "  done in $((SECONDS - start)) s"
done
python - <<'PY'
import importlib.metadata as md
print("torch", md.version("torch"), "| transformers", md.version("transformers"))
PY
