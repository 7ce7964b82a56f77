#!/usr/bin/env bash
# Merge the matrices of several runs (one per CI job, say) into one, ready to publish.
#   ci/publish.sh [REPORTS_DIR [SITE_DIR]]     (defaults: reports site)
# Every matrix.json under REPORTS_DIR is merged; SITE_DIR gets matrix.json, matrix.md,
# matrix.html and index.html (the same page, for GitHub Pages). Needs no runtime: only
# Python and this package (PYTHON=... to choose the interpreter; else .venv, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
reports=${1:-reports}
site=${2:-site}

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import conformance.reporting.document' 2>/dev/null; then
    PYTHON=.venv/bin/python
  elif python3 -c 'import conformance.reporting.document' 2>/dev/null; then
    PYTHON=python3
  else
    echo "publish: creating a minimal Python environment in .venv-publish"
    python3 -m venv .venv-publish
    .venv-publish/bin/python -m pip install -q --disable-pip-version-check -e .
    PYTHON=.venv-publish/bin/python
  fi
fi

mapfile -t matrices < <(find "$reports" -name matrix.json -type f | sort)
if ((${#matrices[@]} == 0)); then
  echo "publish: no matrix.json under $reports" >&2
  exit 2
fi
echo "publish: merging ${#matrices[@]} matrix file(s) into $site/"
"$PYTHON" -m conformance merge "${matrices[@]}" -o "$site"
cp "$site/matrix.html" "$site/index.html"
