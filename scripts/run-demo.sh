#!/usr/bin/env bash
# `make run`: the demo (SPEC §8). Runs in the foreground until Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
echo "sluice: running build/sluice on its built-in defaults (Ctrl-C to stop)"
exec build/sluice
