#!/usr/bin/env bash
# Write a run's results as Markdown for a CI job summary.
#   ci/summary.sh MATRIX_DIR            appends to $GITHUB_STEP_SUMMARY, or prints when unset
# The matrix (matrix.md) and, when the run had --baseline, its comparison (baseline-diff.txt).
set -euo pipefail
dir=${1:?usage: ci/summary.sh MATRIX_DIR}
out=${GITHUB_STEP_SUMMARY:-/dev/stdout}
{
  if [ -f "$dir/baseline-diff.txt" ]; then
    echo "## Regression gate"
    echo
    echo '```'
    cat "$dir/baseline-diff.txt"
    echo '```'
    echo
  fi
  if [ -f "$dir/matrix.md" ]; then
    cat "$dir/matrix.md"
  else
    echo "No matrix was written in \`$dir\` (the run stopped before its end; see the job log)."
  fi
} >> "$out"
