#!/usr/bin/env bash
# Run every fuzz target for a bounded time; exit 1 if any target crashed, asserted or leaked.
#
#   bash fuzz/run.sh                   # each target FUZZ_SECONDS (30) seconds
#   FUZZ_SECONDS=300 bash fuzz/run.sh accumulator kernels_c    # some targets, longer
#
# Python targets (fuzz/fuzz_*.py) run under atheris. Those that reach the C core (accumulator,
# checkpoint, kernels) load a second build of corrsteer.core._core compiled by clang with
# -fsanitize=address,undefined,fuzzer-no-link, with atheris' ASan+UBSan+libFuzzer runtime
# preloaded (fuzz/README.md); the others run plain atheris. The C targets (fuzz/c/*.c, named
# <name>_c) are libFuzzer binaries built by fuzz/Makefile with -fsanitize=fuzzer,address,undefined.
# Everything a run writes goes to one temp folder (FUZZ_WORK), removed at the end unless a
# target failed (then its path and the crashing inputs are printed). Needs clang and the
# project's venv (python on PATH, or PYTHON=...); installs atheris==3.0.0 if missing.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
SECONDS_EACH=${FUZZ_SECONDS:-30}
WORK=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/corrsteer-fuzz.XXXXXX")}
PY_TARGETS=(accumulator checkpoint kernels safetensors sae_npz sae_config custom_task gguf)
C_TARGETS=(corr_bytes_c kernels_c)
SANITIZED=" accumulator checkpoint kernels "
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${PY_TARGETS[@]}" "${C_TARGETS[@]}")

"$PYTHON" -c "import atheris" 2>/dev/null || "$PYTHON" -m pip install -q --disable-pip-version-check "atheris==3.0.0"
SITE=$("$PYTHON" -c "import atheris; print(atheris.path())")
EXT=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
NPINC=$("$PYTHON" -c "import numpy; print(numpy.get_include())")
PYINC=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['include'])")

echo "fuzz: work folder $WORK, $SECONDS_EACH s per target"
# corrsteer's Python files + the instrumented extension, ahead of the installed package on PYTHONPATH
# (and a plain copy with the installed extension, for the targets that need no sanitizer: atheris
# instruments modules found on sys.path, not those behind an editable install's finder)
mkdir -p "$WORK/pkg" "$WORK/plain" "$WORK/c"
git ls-files corrsteer | tar -cf - -T - | tar -xf - -C "$WORK/pkg"
git ls-files corrsteer | tar -cf - -T - | tar -xf - -C "$WORK/plain"
cp "$("$PYTHON" -c "import corrsteer.core._core as c; print(c.__file__)")" "$WORK/plain/corrsteer/core/" || exit 1
t0=$(date +%s)
clang -shared -fPIC -std=c99 -O1 -g -ffp-contract=off -fno-omit-frame-pointer \
    -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -DCS_BLAS_NONE \
    -DCS_COMPILER='"clang+asan+ubsan"' -DCS_CFLAGS='"fuzz/run.sh"' -Icsrc -I"$NPINC" -I"$PYINC" \
    csrc/*.c csrc/python/*.c -o "$WORK/pkg/corrsteer/core/_core$EXT" || exit 1
make -s -C fuzz BUILD="$WORK/c" >/dev/null || exit 1
echo "fuzz: built in $(( $(date +%s) - t0 )) s"

export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:quarantine_size_mb=32:malloc_context_size=10"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
failed=()
printf '%-12s %10s %8s %6s %7s %s\n' target execs exec/s cov ft result > "$WORK/summary.txt"
for t in "${TARGETS[@]}"; do
    corpus="$WORK/corpus/$t"; mkdir -p "$corpus" "$WORK/artifacts/$t"
    seeds="fuzz/corpus/${t%_c}"; [ "$t" = corr_bytes_c ] && seeds=fuzz/corpus/accumulator
    cp -r "$seeds"/. "$corpus"/ 2>/dev/null
    regress="fuzz/regressions/${t%_c}"; [ "$t" = corr_bytes_c ] && regress=fuzz/regressions/accumulator
    [ -d "$regress" ] && cp -r "$regress"/. "$corpus"/
    opts=(-max_total_time="$SECONDS_EACH" -print_final_stats=1 -max_len=4096 -rss_limit_mb=3072 -timeout=20
          -artifact_prefix="$WORK/artifacts/$t/" "$corpus")
    log="$WORK/$t.log"
    case "$t" in
        *_c) nice "$WORK/c/fuzz_${t%_c}" "${opts[@]}" > "$log" 2>&1 ;;
        *) if [[ "$SANITIZED" == *" $t "* ]]; then
               CORRSTEER_FUZZ=1 PYTHONPATH="$WORK/pkg:fuzz" PYTHONMALLOC=malloc LD_PRELOAD="$SITE/asan_with_fuzzer.so" \
                   nice "$PYTHON" "fuzz/fuzz_$t.py" "${opts[@]}" > "$log" 2>&1
           else
               CORRSTEER_FUZZ=1 PYTHONPATH="$WORK/plain:fuzz" nice "$PYTHON" "fuzz/fuzz_$t.py" "${opts[@]}" > "$log" 2>&1
           fi ;;
    esac
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    result=ok
    if [ $rc -ne 0 ] || ls "$WORK/artifacts/$t"/* >/dev/null 2>&1; then result="FAILED (see $log)"; failed+=("$t"); fi
    printf '%-12s %10s %8s %6s %7s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result" \
        | tee -a "$WORK/summary.txt"
done
echo "fuzz: total $(( $(date +%s) - t0 )) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}; crashing inputs under $WORK/artifacts/ (copy them to fuzz/regressions/<target>/)"
    for t in "${failed[@]}"; do tail -40 "$WORK/$t.log"; done
    exit 1
fi
[ -n "${FUZZ_KEEP:-}" ] || rm -rf "$WORK"
