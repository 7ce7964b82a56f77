"""A private bridged subnet in network namespaces of the suite's own (host setup ``bridge_net``).

The shape of a container engine's bridge network, made with iproute2's
``ip`` and nothing on the host touched::

    netns …-ctr (the container joins it by path)    netns …-peer (a second container's stand-in)
        eth0 198.18.N.2/24                              eth0 198.18.N.3/24
          │ veth                                          │ veth
    netns …-br:  cfc<x> ──── bridge cfb<x> ──── cfp<x>

Every link is created inside the suite's namespaces (``ip -n NS link add …
peer name eth0 netns OTHER``), never in the host's, so the host's
interfaces, addresses and routes stay as they were; 198.18.0.0/15 is the
benchmarking range (RFC 2544), routed nowhere.  The namespaces are named
``cf-<run tag>-<hex>-…`` under /run/netns; all three are deleted on every
way out (an error, Ctrl-C, SIGTERM), which takes their links with them.
Standard library only: this runs on the runtime's host, through the agent.
"""
from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

NETNS_DIR = Path("/run/netns")
IP_TIMEOUT_S = 10.0
SUBNET = "198.18.{n}.0/24"


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")


def _delete(names: list[str]) -> None:
    for name in reversed(names):
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=IP_TIMEOUT_S,
                       stdin=subprocess.DEVNULL)


def _attach(bridge_ns: str, bridge: str, port: str, ns: str, address: str) -> None:
    """A veth pair: ``port`` on the bridge, its peer ``eth0`` in ``ns`` with ``address``."""
    _ip("-n", bridge_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("-n", bridge_ns, "link", "set", port, "master", bridge, "up")
    _ip("-n", ns, "addr", "add", address, "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "link", "set", "lo", "up")  # a runtime leaves a namespace given by path as it is


@functools.lru_cache(maxsize=1)
def unsupported() -> str | None:
    """Why this host cannot make a bridge and a veth pair (requirement ``veth-bridge``), or None.

    Tried for real in a network namespace that ``unshare --net`` makes for
    the one command and that vanishes, with its links, when it ends.
    """
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"{package}'s `{tool}` is not installed"
    done = subprocess.run(["unshare", "--net", "sh", "-c", "ip link add cfprobe0 type bridge && "
                           "ip link add cfprobe1 type veth peer name cfprobe2"],
                          capture_output=True, text=True, timeout=IP_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        return f"the kernel cannot make a bridge and a veth pair: {done.stderr.strip()[-200:]}"
    return None


@contextlib.contextmanager
def bridge_net(workdir: Path) -> Iterator[dict[str, str]]:
    if shutil.which("ip") is None:
        raise OSError("bridge_net needs iproute2's `ip` on the runtime's host")
    x = secrets.token_hex(3)
    prefix = f"cf-{os.environ.get('OCI_CONFORMANCE_TAG', 'run')}-{x}"
    bridge_ns, ctr_ns, peer_ns = f"{prefix}-br", f"{prefix}-ctr", f"{prefix}-peer"
    bridge = f"cfb{x}"
    n = secrets.randbelow(256)
    made: list[str] = []
    try:
        for ns in (bridge_ns, ctr_ns, peer_ns):
            made.append(ns)  # before it exists: an interrupt between the two still removes it
            _ip("netns", "add", ns)
        _ip("-n", bridge_ns, "link", "add", bridge, "type", "bridge")
        _ip("-n", bridge_ns, "link", "set", bridge, "up")
        _attach(bridge_ns, bridge, f"cfc{x}", ctr_ns, f"198.18.{n}.2/24")
        _attach(bridge_ns, bridge, f"cfp{x}", peer_ns, f"198.18.{n}.3/24")
        yield {"net_netns": str(NETNS_DIR / ctr_ns), "net_peer_netns": str(NETNS_DIR / peer_ns),
               "net_addr": f"198.18.{n}.2", "net_peer_addr": f"198.18.{n}.3",
               "net_subnet": SUBNET.format(n=n), "net_bridge": bridge}
    finally:
        _delete(made)
