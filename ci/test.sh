#!/usr/bin/env bash
# The project's own tests: set up (idempotent), lint, then run tests/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check conformance runtime_ref tests bench conftest.py
mypy
# Two workers by default (CI's machines have two cores; the guests and the catalog runs dominate);
# a later -n in "$@" wins.
exec pytest tests -p no:cacheprovider -n 2 "$@"
