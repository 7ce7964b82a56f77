#!/usr/bin/env python3
"""Benchmark: what another host costs — guest boot time, and per-scenario overhead remote vs local.

Prints, for each qemu layout asked for:
  - the guest's boot time (qemu start to sshd answering), and whether KVM or TCG ran it;
  - the mean wall time per scenario of the same small set of scenarios (pid, uts,
    ipc, memory) on one runtime, run locally and in the guest, and their ratio
    (what the agent round trip and the emulated guest add).
Not a test: it asserts nothing.  Every guest it boots is stopped.

    python3 bench/bench_hosts.py                      # runc, qemu://cgroup-v2
    python3 bench/bench_hosts.py --runtime crun --layouts cgroup-v2 cgroup-v1
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from conformance.catalog.loader import load_scenarios  # noqa: E402
from conformance.hosts.qemu import Guest  # noqa: E402
from conformance.hosts.targets import LocalTarget, RemoteTarget  # noqa: E402

SCENARIOS = ("pid-ns-init-is-pid1", "uts-ns-hostname", "ipc-ns-host-shm-hidden", "memory-oom-kill")


def _scenarios():
    wanted = []
    for name in SCENARIOS:
        wanted += load_scenarios(REPO / "scenarios" / f"{name}.yaml")
    return wanted


def _per_scenario(target, runtime: str, scenarios, rounds: int) -> float:
    target.execute(scenarios[0], runtime, ())  # warm-up: rootfs cache, agent placement, page cache
    started = time.monotonic()
    for _ in range(rounds):
        for sc in scenarios:
            done = target.execute(sc, runtime, ())
            if done.error:
                raise SystemExit(f"{sc.id}: {done.error}")
    return (time.monotonic() - started) / (rounds * len(scenarios))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="runc")
    parser.add_argument("--layouts", nargs="+", default=["cgroup-v2"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OCI_CONFORMANCE_TAG", "b" + secrets.token_hex(3))
    scenarios = _scenarios()
    local = LocalTarget({})
    try:
        local_s = _per_scenario(local, args.runtime, scenarios, args.rounds)
    finally:
        local.close()
    print(f"local: {local_s * 1000:.0f} ms per scenario ({args.runtime}, {len(scenarios)} scenarios × {args.rounds})")
    for layout in args.layouts:
        import testinfra

        guest = Guest(layout).boot()
        try:
            host = testinfra.get_host(f"paramiko://root@127.0.0.1:{guest.port}", ssh_identity_file=str(guest.key))
            target = RemoteTarget(f"qemu://{layout}", host.backend, {}, os.environ["OCI_CONFORMANCE_TAG"],
                                  python="/usr/bin/python3")
            try:
                remote_s = _per_scenario(target, args.runtime, scenarios, args.rounds)
            finally:
                target.close()
        finally:
            guest.stop()
        print(f"qemu://{layout}: boot {guest.boot_s:.1f} s ({guest.accel_note or guest.accel}); "
              f"{remote_s * 1000:.0f} ms per scenario; remote/local {remote_s / local_s:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
