#!/usr/bin/env bash
# Install what the suite needs, idempotently: a second call installs nothing.
#   Debian packages: the runtimes under test, busybox-static (the rootfs), the
#   OCI runtime-spec JSON Schema (to validate bundles), util-linux (unshare).
#   Python: a venv at .venv with this package and its dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(runc crun runsc busybox-static golang-github-opencontainers-specs-dev util-linux iproute2)
VENV=${VENV:-.venv}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Reinstall the Python package only when pyproject.toml changed (or the venv is new).
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "setup: creating the Python environment in $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
