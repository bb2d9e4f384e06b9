#!/usr/bin/env bash
# `make check`: formatting (clang-format), static analysis (cppcheck) and banned functions.
set -u
cd "$(dirname "$0")/.."
status=0
files=$(git ls-files '*.c' '*.h')

echo "== clang-format"
bad=$(for f in $files; do clang-format --dry-run "$f" 2>&1 | grep -q warning && echo "$f"; done)
if [ -n "$bad" ]; then
    echo "not formatted (run clang-format -i):"; echo "$bad" | sed 's/^/  /'; status=1
fi

echo "== banned functions"
# strcpy/strcat/sprintf/vsprintf/gets/strtok/atoi/atol: unbounded or unchecked.
if grep -nE '\b(strcpy|strcat|sprintf|vsprintf|gets|strtok|atoi|atol|atoll)\s*\(' $files; then
    echo "banned functions found above"; status=1
fi

echo "== cppcheck"
cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
    --suppress=missingIncludeSystem -I proxy/include -I proxy/src -D__GNUC__ \
    proxy/src proxy/gateway proxy/examples watcher/src 2>&1 || status=1

[ $status -eq 0 ] && echo "check: OK"
exit $status
