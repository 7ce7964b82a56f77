#!/usr/bin/env bash
# The main job: set up (idempotent), run every scenario, print and write the matrix.
#   ci/matrix.sh                      -> the embedded reference runtime and runc, side by side,
#                                        with the negative controls
#   RUNTIMES=runc,crun ci/matrix.sh   -> any runtimes; extra arguments go to pytest
#   CONTROLS=0 ci/matrix.sh           -> without the negative controls (e.g. all but one CI job)
# A cell that fails is a finding about a runtime, reported in the matrix: the job still
# succeeds. It fails when the harness could not run (usage error, interruption, crash),
# or with STRICT=1 on any failing cell; with BASELINE=OLD.json it is a regression gate: it fails
# on a cell that passed in OLD.json and does not now (and on failing cells OLD.json does not know).
set -uo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh || exit $?
export PATH="$PWD/.venv/bin:$PATH"
controls=(--controls)
if [ "${CONTROLS:-1}" = 0 ]; then controls=(); fi
baseline=()
if [ -n "${BASELINE:-}" ]; then baseline=(--baseline "$BASELINE"); fi
pytest conformance --runtime="${RUNTIMES:-ref,runc}" ${controls[@]+"${controls[@]}"} \
  --matrix-dir="${MATRIX_DIR:-reports}" -p no:cacheprovider ${baseline[@]+"${baseline[@]}"} "$@"
status=$?
if [ "$status" -eq 1 ] && [ "${STRICT:-0}" != 1 ] && [ -z "${BASELINE:-}" ]; then
  echo "matrix.sh: some cells failed; they are findings, see ${MATRIX_DIR:-reports}/matrix.md"
  exit 0
fi
exit "$status"
