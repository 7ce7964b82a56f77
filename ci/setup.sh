#!/usr/bin/env bash
# Install what the suite needs, idempotently: a second call installs nothing.
#   Debian packages: the runtimes under test, busybox-static (the rootfs), the
#   OCI runtime-spec JSON Schema (to validate bundles), util-linux (unshare, setpriv),
#   uidmap (newuidmap/newgidmap: the rootless lane's subordinate id maps);
#   for qemu:// hosts: qemu, sshd (its binary runs in the guests; the service is
#   never started here), kmod (depmod), and a Debian kernel unpacked in the cache;
#   apparmor (apparmor_parser: the guests boot with AppArmor on and load a test profile).
#   Python: a venv at .venv with this package and its dependencies, made from the distribution's
#   python3 (python3-venv) unless PYTHON names another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(runc crun runsc containerd busybox-static golang-github-opencontainers-specs-dev util-linux iproute2 uidmap
              qemu-system-x86 openssh-server openssh-client kmod apparmor python3-venv)
VENV=${VENV:-.venv}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # Installing openssh-server must not start an sshd on this machine: Debian's
  # policy-rc.d convention says "no services now" (only if none is in place).
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit 1; }
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# The interpreter the venv is made from: PYTHON if set; else the distribution's /usr/bin/python3, which
# Debian builds with PGO and LTO (the harness spends ~10 % less CPU on it than on a Python built without,
# such as a default pyenv build: README "Speed"); else python3 on the PATH.
venv_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
  elif /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
    echo /usr/bin/python3
  else echo python3
  fi
}

# Reinstall the Python package only when pyproject.toml or an installed script changed (or the venv is
# new): the editable install serves the code live, but pip copies scripts/ (runtime-ref's launcher).
stamp="$VENV/.installed-$(cat pyproject.toml scripts/* | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "setup: creating the Python environment in $VENV"
  [ -x "$VENV/bin/python" ] || "$(venv_python)" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,hosts]'
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

# The guest kernel for qemu:// hosts (cached; a second call finds it).
"$VENV/bin/python" -m conformance.hosts.qemu fetch-kernel >/dev/null
