#!/usr/bin/env bash
# The main job: set up (idempotent), run every scenario, print and write the matrix.
#   ci/matrix.sh                      -> the embedded reference runtime and runc, side by side
#   RUNTIMES=runc,crun ci/matrix.sh   -> any runtimes; extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec pytest conformance --runtime="${RUNTIMES:-ref,runc}" --controls --matrix-dir="${MATRIX_DIR:-reports}" -p no:cacheprovider "$@"
