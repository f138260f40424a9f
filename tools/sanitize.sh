#!/usr/bin/env bash
# Build rnncore's C++ core with AddressSanitizer + UndefinedBehaviorSanitizer
# into a throwaway venv and run the test suite under it.
#
#   tools/sanitize.sh                      # the whole suite
#   tools/sanitize.sh -k fuzz -x           # extra arguments go to pytest
#   SANITIZE_KEEP=1 tools/sanitize.sh      # keep the build, venv and logs
#   SANITIZE_WORK=/tmp/san tools/sanitize.sh   # build there and keep it: a second
#                                          # run rebuilds incrementally (minutes -> seconds)
#
# The venv is created with --system-site-packages, so numpy, pytest,
# hypothesis, scipy-openblas32 (and torch, if installed) are reused; only
# rnncore is built (CMake option RNNCORE_SANITIZE=ON, RelWithDebInfo for
# line numbers in the stacks). Python itself is not instrumented: libasan is
# LD_PRELOADed. Leak detection is off (CPython leaks by design at exit).
# Every sanitizer report, from pytest or from the child processes the tests
# start, is written to a log file; the script prints them and exits non-zero
# if the tests fail or any sanitizer reported.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CXX_DRIVER="${CXX:-g++}"
if [[ -n "${SANITIZE_WORK:-}" ]]; then
  WORK="$SANITIZE_WORK"
  SANITIZE_KEEP=1
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/rnncore-sanitize.XXXXXX")"
fi
LOGS="$WORK/logs"
rm -rf "$LOGS"
mkdir -p "$LOGS"

cleanup() {
  if [[ -z "${SANITIZE_KEEP:-}" ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

LIBASAN="$("$CXX_DRIVER" -print-file-name=libasan.so)"
if [[ ! -e "$LIBASAN" ]]; then
  echo "sanitize.sh: libasan.so not found ($CXX_DRIVER -print-file-name=libasan.so gave '$LIBASAN')" >&2
  exit 2
fi
# libstdc++ is preloaded too: python does not link it, and without it ASan
# cannot find the real __cxa_throw when the extension throws (CHECK failed:
# "real___cxa_throw != 0") -- every C++ exception would abort.
LIBSTDCXX="$(readlink -f "$("$CXX_DRIVER" -print-file-name=libstdc++.so.6)")"
PRELOAD="$LIBASAN"
[[ -e "$LIBSTDCXX" ]] && PRELOAD="$LIBASAN:$LIBSTDCXX"

echo "== venv: $WORK/venv (system site-packages)"
[[ -x "$WORK/venv/bin/python" ]] || "$PYTHON" -m venv --system-site-packages "$WORK/venv"
VPY="$WORK/venv/bin/python"

echo "== build: RNNCORE_SANITIZE=ON in $WORK/build"
BUILD_ARGS=(--no-deps -q
  -Ccmake.define.RNNCORE_SANITIZE=ON
  -Ccmake.build-type=RelWithDebInfo
  "-Cbuild-dir=$WORK/build")
if "$VPY" -c "import scikit_build_core, pybind11" 2>/dev/null; then
  BUILD_ARGS+=(--no-build-isolation)   # offline and fast: the build tools are already there
fi
"$VPY" -m pip install "${BUILD_ARGS[@]}" "$ROOT"

# the sanitized extension, not the source tree's, must be the one imported
SO="$(cd "$WORK" && env -u PYTHONPATH LD_PRELOAD="$PRELOAD" ASAN_OPTIONS=detect_leaks=0 \
      "$VPY" -c 'import rnncore._core as c; print(c.__file__)')"
case "$SO" in
  "$WORK"/venv/*) ;;
  *) echo "sanitize.sh: rnncore imported from $SO, not from the venv" >&2; exit 2 ;;
esac
if ! ldd "$SO" | grep -q libasan; then
  echo "sanitize.sh: $SO is not linked against libasan" >&2
  exit 2
fi
echo "== extension: $SO"

# allocator_may_return_null + max_allocation_size_mb: an allocation too large
# for the machine fails as malloc does (MemoryError / std::bad_alloc) instead
# of ASan aborting, so the "cannot be allocated" tests behave as without ASan.
export LD_PRELOAD="$PRELOAD${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1:max_allocation_size_mb=3072:detect_stack_use_after_return=0:log_path=$LOGS/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LOGS/ubsan"
unset PYTHONPATH

echo "== tests: $VPY -m pytest ${*:-tests}"
echo "   LD_PRELOAD=$LD_PRELOAD"
echo "   ASAN_OPTIONS=$ASAN_OPTIONS"
echo "   UBSAN_OPTIONS=$UBSAN_OPTIONS"
set +e
(cd "$ROOT" && "$VPY" -m pytest -p no:cacheprovider -q -ra "${@:-tests}") 2>&1 | tee "$WORK/pytest.out"
status=${PIPESTATUS[0]}
set -e

# ASan writes its reports to $LOGS/asan.<pid> (log_path); UBSan ignores
# log_path when ASan is loaded and prints to stderr, which the tests show
# (a child process' stderr is part of the failure message of the test that
# ran it): both are searched. A log holding only "WARNING: AddressSanitizer
# failed to allocate" lines is the expected MemoryError path of the
# huge-size tests, not a report.
MARKERS="ERROR: AddressSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer|runtime error: |CHECK failed|Sanitizer:DEADLYSIGNAL"
reports=""
for f in $(find "$LOGS" -type f | sort); do
  if grep -qE "$MARKERS" "$f"; then
    reports="$reports $f"
  fi
done
ubsan=$(grep -cE "$MARKERS" "$WORK/pytest.out" || true)
if [[ -n "$reports" || "$ubsan" -gt 0 ]]; then
  echo
  echo "== sanitizer reports"
  for f in $reports; do
    echo "---- $f"
    grep -v "WARNING: AddressSanitizer failed to allocate" "$f"
  done
  if [[ "$ubsan" -gt 0 ]]; then
    echo "---- in the test output ($ubsan line(s)); each with the first frames of its stack:"
    grep -E -A8 "$MARKERS" "$WORK/pytest.out" | cut -c1-300
  fi
fi

echo
if [[ $status -ne 0 ]]; then echo "== tests FAILED (pytest exit status $status)"; fi
if [[ -n "$reports" || "$ubsan" -gt 0 ]]; then echo "== sanitizers REPORTED errors (see above)"; fi
if [[ $status -eq 0 && -z "$reports" && "$ubsan" -eq 0 ]]; then
  echo "== tests passed, no sanitizer report"
  exit 0
fi
exit 1
