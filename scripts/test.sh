#!/usr/bin/env bash
# Runs every test suite — unit (Criterion) then end-to-end (pytest) — and ends with one line:
# "N passed, N failed". Exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
OUT=build/test
mkdir -p "$OUT"
rm -f "$OUT"/*.xml

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp:print_suppressions=0}

status=0
echo "== unit tests"
build/test/unit --xml="$OUT/unit.xml" -j2 || status=1

echo "== end-to-end tests"
# e2e/lab needs root (network namespaces); its conftest skips it with a reason otherwise.
"$PYTHON" -m pytest -q -p no:cacheprovider --junitxml="$OUT/e2e.xml" ${PYTEST_ARGS:-} e2e || status=1

echo "== static checks (clang-format, banned functions, cppcheck)"
if scripts/check.sh > "$OUT/check.log" 2>&1; then
    check_case='<testcase classname="check" name="static-checks"/>'
else
    cat "$OUT/check.log"
    check_case='<testcase classname="check" name="static-checks"><failure message="make check failed"/></testcase>'
    status=1
fi
printf '<testsuite name="check">%s</testsuite>\n' "$check_case" > "$OUT/check.xml"

"$PYTHON" scripts/summarize.py "$OUT"/unit.xml "$OUT"/e2e.xml "$OUT"/check.xml || status=1
exit $status
