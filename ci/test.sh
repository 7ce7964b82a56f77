#!/usr/bin/env bash
# The project's own tests: set up (idempotent), then run tests/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec pytest tests -p no:cacheprovider "$@"
