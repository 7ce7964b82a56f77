"""A private bridged subnet in network namespaces of the suite's own (host setup ``bridge_net``).

The shape of a container engine's bridge network, made with iproute2's
``ip`` and nothing on the host touched::

    netns …-ctr (the container joins it by path)    netns …-peer (a second container's stand-in)
        eth0 198.18.N.2/24                              eth0 198.18.N.3/24
          │ veth                                          │ veth
    netns …-br:  cfc<x> ──── bridge cfb<x> ──── cfp<x>

Every link is created inside the suite's namespaces (from the bridge's:
``link add cfc<x> … type veth peer name eth0 netns …-ctr``), never in the
host's, so the host's interfaces, addresses and routes stay as they were;
198.18.0.0/15 is the benchmarking range (RFC 2544), routed nowhere.

Three ``ip -batch`` processes make it, one per namespace (a process costs
more than the kernel's work of all its commands; one ``ip`` per command made
this setup cost ~40 ms a scenario, this ~10 ms): ``unshare --net ip`` makes
and names the bridge's namespace, the two others, the bridge and both veth
pairs; ``ip -n`` then addresses each end (nothing but a process in a
namespace can).  The namespaces are named ``cf-<run tag>-<pid>-<hex>-…``
under /run/netns; all three are deleted on every way out (an error, Ctrl-C,
SIGTERM) as ``ip netns delete`` does it, without a process (their bind mounts
detached, the files removed), which takes their links with them.  A process
killed outright leaves them: the pid in their names lets the next run's
sweep (session.sweep_dead) remove those whose maker no longer runs.
Standard library only: this runs on the runtime's host, through the agent.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

from .drivers.procs import ended_within

NETNS_DIR = Path("/run/netns")
IP_TIMEOUT_S = 10.0
SUBNET = "198.18.{n}.0/24"
MNT_DETACH = 2
#: the namespaces' roles, the last part of their names
ROLES = ("br", "ctr", "peer")
#: the bridge namespace's ip: in a network namespace of its own from its start (see _bridge)
BRIDGE_IP = ["unshare", "--net", "ip"]


def _ip_batch(argv: list[str], commands: Callable[[int], list[str]]) -> None:
    """One ``ip -batch -`` process (started by ``argv``) running ``commands(its pid)`` in order.

    ip stops at the first command that fails; the error names it.  One
    process per namespace rather than one per command: a process costs ~1.3 ms
    here, the kernel's part of a command a fraction of that.
    """
    proc = subprocess.Popen([*argv, "-batch", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    with proc:
        lines = commands(proc.pid)
        try:
            _feed_and_wait(proc, "".join(line + "\n" for line in lines))
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise OSError(f"`{' '.join(argv)} -batch -` did not end in {IP_TIMEOUT_S:g}s") from None
        except BaseException:  # Ctrl-C: ip must not make a namespace after the teardown removed the names
            _kill(proc)
            raise
        err = proc.stderr.read() if proc.stderr is not None else ""
    if proc.returncode != 0:
        raise OSError(f"`{' '.join(argv)} -batch -` failed: {_failed_line(err, lines)}")


def _feed_and_wait(proc: subprocess.Popen[str], batch: str) -> None:
    """Give ip its batch and await its end on a pidfd (procs.ended_within: subprocess's own
    wait with a timeout polls with growing sleeps).  The batch, and the one complaint ip makes
    before it stops, each fit in a pipe's buffer: neither side waits for the other to read."""
    assert proc.stdin is not None
    proc.stdin.write(batch)
    proc.stdin.close()
    if not ended_within(proc, IP_TIMEOUT_S):
        raise subprocess.TimeoutExpired(proc.args, IP_TIMEOUT_S)


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()


def _failed_line(err: str, lines: list[str]) -> str:
    """ip's complaint, with the batch line it names (``Command failed -:N``) spelt out."""
    failed = re.search(r"Command failed -:(\d+)", err)
    line = int(failed.group(1)) if failed else 0
    said = err.strip().replace("\n", "; ") or "no message"
    return f"{said} (`{lines[line - 1]}`)" if 0 < line <= len(lines) else said


def _bridge(names: dict[str, str], x: str) -> Callable[[int], list[str]]:
    """The bridge namespace's batch: ip is ``unshare --net``'s command, in a namespace of its own, which
    ``netns attach`` names; the other two namespaces are made from there (ip's netns add leaves
    ip where it was), and every link is created in the bridge's namespace or, a veth's peer, directly in
    the other's (``peer … netns``): none is ever in the host's.  The ports go on the bridge as they are
    made (``master`` names a link of ip's own namespace)."""
    def commands(pid: int) -> list[str]:
        return [f"netns attach {names['br']} {pid}", f"netns add {names['ctr']}", f"netns add {names['peer']}",
                f"link add cfb{x} up type bridge",
                f"link add cfc{x} up master cfb{x} type veth peer name eth0 netns {names['ctr']}",
                f"link add cfp{x} up master cfb{x} type veth peer name eth0 netns {names['peer']}"]
    return commands


def _addressed(address: str) -> Callable[[int], list[str]]:
    """An end namespace's batch (``ip -n NS``): its eth0 addressed and up, and lo up (a runtime leaves a
    namespace given by path as it is).  A veth's peer cannot be brought up as it is made (it has no
    peer yet then), nor addressed from another namespace."""
    return lambda pid: [f"addr add {address} dev eth0", "link set eth0 up", "link set lo up"]


def _delete(names: list[str]) -> None:
    """What ``ip netns delete`` does, without a process: detach each name's bind mount, remove the file.
    The namespace ends with its last user, taking its links along."""
    libc = ctypes.CDLL(None, use_errno=True)
    for name in names:
        path = NETNS_DIR / name
        libc.umount2(str(path).encode(), MNT_DETACH)
        path.unlink(missing_ok=True)


@functools.lru_cache(maxsize=1)
def unsupported() -> str | None:
    """Why this host cannot make a bridge and a veth pair (requirement ``veth-bridge``), or None.

    Tried for real, as the setup does it (one ``ip -batch``, a port put on the
    bridge as it is made), in a network namespace that ``unshare --net`` makes
    for the one command and that vanishes, with its links, when it ends.  An
    ``ip`` older than ``netns attach`` (iproute2 4.20) cannot name the
    bridge's namespace: a host fact too, not the runtime's fault.
    """
    missing = _missing_tool()
    if missing is not None:
        return f"{missing} is not installed"
    usage = subprocess.run(["ip", "netns", "help"], capture_output=True, text=True, timeout=IP_TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
    if "netns attach" not in usage.stdout + usage.stderr:
        return "iproute2's `ip` has no `ip netns attach` (iproute2 4.20 added it)"
    done = subprocess.run(["unshare", "--net", "ip", "-batch", "-"], capture_output=True, text=True,
                          timeout=IP_TIMEOUT_S, input="link add cfprobe0 type bridge\n"
                          "link add cfprobe1 master cfprobe0 type veth peer name cfprobe2\n")
    if done.returncode != 0:
        return f"the kernel cannot make a bridge and a veth pair: {done.stderr.strip()[-200:]}"
    return None


def _names(x: str) -> dict[str, str]:
    """``cf-TAG-PID-X-ROLE``: the pid of the process that makes them, for sweep_dead."""
    prefix = f"cf-{os.environ.get('OCI_CONFORMANCE_TAG', 'run')}-{os.getpid()}-{x}"
    return {role: f"{prefix}-{role}" for role in ROLES}


@functools.lru_cache(maxsize=1)
def _missing_tool() -> str | None:
    """The first tool this setup needs that the host lacks, with its package (asked once a process)."""
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"{package}'s `{tool}`"
    return None


@contextlib.contextmanager
def bridge_net(workdir: Path) -> Iterator[dict[str, str]]:
    missing = _missing_tool()
    if missing is not None:
        raise OSError(f"bridge_net needs {missing} on the runtime's host")
    x = secrets.token_hex(3)
    names = _names(x)
    n = secrets.randbelow(256)
    try:
        _ip_batch(BRIDGE_IP, _bridge(names, x))
        _ip_batch(["ip", "-n", names["ctr"]], _addressed(f"198.18.{n}.2/24"))
        _ip_batch(["ip", "-n", names["peer"]], _addressed(f"198.18.{n}.3/24"))
        yield {"net_netns": str(NETNS_DIR / names["ctr"]), "net_peer_netns": str(NETNS_DIR / names["peer"]),
               "net_addr": f"198.18.{n}.2", "net_peer_addr": f"198.18.{n}.3",
               "net_subnet": SUBNET.format(n=n), "net_bridge": f"cfb{x}"}
    finally:
        _delete(list(names.values()))  # also those a failed or interrupted batch did not make yet


def sweep_dead(tag_pattern: str) -> list[str]:
    """Remove the namespaces of processes that no longer run (killed: their ``finally`` never ran),
    for runs whose tag matches ``tag_pattern`` (a regular expression); returns what it removed."""
    named = re.compile(f"cf-(?:{tag_pattern})-(?P<pid>\\d+)-[0-9a-f]{{6}}-(?:{'|'.join(ROLES)})")
    dead = [p.name for p in NETNS_DIR.glob("cf-*")
            if (m := named.fullmatch(p.name)) and not Path(f"/proc/{m.group('pid')}").exists()]
    _delete(dead)
    return [f"netns {NETNS_DIR / name}" for name in dead]
