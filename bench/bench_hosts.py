#!/usr/bin/env python3
"""Benchmark: what another host costs per scenario, side by side with this one, in one run.

For each host — local (in-process), a qemu guest (``qemu://cgroup-v2`` by
default) and ssh (a throw-away sshd on 127.0.0.1, so the remote host is this
machine reached through ssh and the kept-open agent) — prints:
  - the harness's mean time per scenario over the catalog (everything a
    scenario costs there: the agent round trip, bundle, runtime, probes,
    clean-up), on one runtime;
  - the mean of one bare ``RUNTIME run`` of each of the same bundles, timed
    on that host by the agent (conformance/host/bare.py), and their ratio
    (goal for the guest: ≤ 3);
  - for the guest: its boot (qemu start to sshd, with the console's
    milestones) and the agent's start, i.e. the time to a usable agent.
Then, unless --no-suite, the wall time of the whole catalog on runc and crun
in guests as a user runs it (``pytest conformance --runtime=runc,crun
--hosts=qemu://cgroup-v2 -n 2``: two workers, each booting its own guest of
one vCPU under TCG; boot included; goal < 5 minutes; ``--suite-workers``).
Not a test: it asserts nothing.  Every guest, sshd and agent it starts is stopped.

    python3 bench/bench_hosts.py                      # runc; local, qemu://cgroup-v2, ssh
    python3 bench/bench_hosts.py --runtime crun --hosts local qemu://cgroup-v1 --no-suite
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])  # the project's environment, as bench_suite
sys.path.insert(0, str(REPO))

import testinfra  # noqa: E402

from bench.bench_suite import catalog, user_env  # noqa: E402
from conformance.hosts.qemu import Guest  # noqa: E402
from conformance.hosts.targets import LocalTarget, RemoteTarget  # noqa: E402
from tests import sshd as sshd_mod  # noqa: E402

TAG = "bh" + secrets.token_hex(3)


def per_scenario(target, runtime: str, scenarios) -> tuple[list[float], list[str]]:
    """Wall seconds of each scenario through the target (the first one warms caches and is run twice)."""
    target.execute(scenarios[0], runtime, ())
    times, errors = [], []
    for sc in scenarios:
        started = time.perf_counter()
        done = target.execute(sc, runtime, ())
        elapsed = time.perf_counter() - started
        if done.skip:
            continue
        if done.error:
            errors.append(f"{sc.id}: {done.error[:160]}")
        times.append(elapsed)
    return times, errors


def report(name: str, harness: list[float], bare: list[float | None], extra: str = "") -> None:
    runs = [b for b in bare if b is not None]
    h, b = statistics.mean(harness), statistics.mean(runs)
    print(f"{name:<22} harness {h * 1000:7.0f} ms/scenario   bare run {b * 1000:6.0f} ms   ratio {h / b:4.2f}"
          f"   ({len(harness)} scenarios; median {statistics.median(harness) * 1000:.0f} ms){extra}", flush=True)


def bench_local(runtime: str, scenarios) -> None:
    target = LocalTarget({})
    try:
        harness, errors = per_scenario(target, runtime, scenarios)
        bare = target.bare_runs(scenarios, runtime)
    finally:
        target.close()
    report("local", harness, bare, f"; {len(errors)} errors" if errors else "")


def bench_remote(spec: str, target: RemoteTarget, runtime: str, scenarios, extra: str = "") -> None:
    try:
        harness, errors = per_scenario(target, runtime, scenarios)
        bare = target.bare_runs(scenarios, runtime)
    finally:
        target.close()
    report(spec, harness, bare, extra + (f"; {len(errors)} errors, first: {errors[0]}" if errors else ""))


def bench_guest(layout: str, runtime: str, scenarios) -> None:
    guest = Guest(layout).boot()
    try:
        host = testinfra.get_host(f"paramiko://root@127.0.0.1:{guest.port}", ssh_identity_file=str(guest.key))
        target = RemoteTarget(f"qemu://{layout}", host.backend, {}, TAG, python="/usr/bin/python3")
        started = time.monotonic()
        target.agent.start()
        agent_s = time.monotonic() - started
        milestones = " ".join(f"{k} {v:.1f}" for k, v in guest.timeline.items())
        print(f"qemu://{layout}: boot {guest.boot_s:.1f} s ({guest.accel_note or guest.accel}; {guest.cpus} vCPU; {guest.image_note}; "
              f"s from qemu's start: {milestones}), agent +{agent_s:.1f} s: usable after "
              f"{guest.boot_s + agent_s:.1f} s", flush=True)
        bench_remote(f"qemu://{layout}", target, runtime, scenarios)
    finally:
        guest.stop()


def bench_ssh(runtime: str, scenarios) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"{TAG}-sshd-"))
    server, proc, made = sshd_mod.start(workdir)
    try:
        spec = f"ssh://root@127.0.0.1:{server.port}"
        host = testinfra.get_host(spec, ssh_identity_file=str(server.key), ssh_config=str(server.ssh_config))
        bench_remote("ssh (127.0.0.1)", RemoteTarget(spec, host.backend, {}, TAG), runtime, scenarios)
    finally:
        sshd_mod.stop(proc, made)
        shutil.rmtree(workdir, ignore_errors=True)


def whole_catalog_in_guest(layout: str, workers: int) -> None:
    out = Path(tempfile.mkdtemp(prefix=f"{TAG}-reports-"))
    cmd = [sys.executable, "-m", "pytest", "conformance", "--runtime=runc,crun", f"--hosts=qemu://{layout}",
           f"--matrix-dir={out}", "-p", "no:cacheprovider", "-q", "-n", str(workers)]
    try:
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=user_env())
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    lines = done.stdout.strip().splitlines()
    summary = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)),
                   lines[-1] if lines else f"exit {done.returncode}")
    print(f"whole catalog, runc and crun, qemu://{layout}, -n {workers} (boot included): {wall:.0f} s (goal < 300 s)   "
          f"({summary.strip('= ')})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="runc")
    parser.add_argument("--hosts", nargs="+", default=["local", "qemu://cgroup-v2", "ssh"],
                        help="local, qemu://LAYOUT, ssh (a throw-away sshd on 127.0.0.1)")
    parser.add_argument("--no-suite", action="store_true", help="leave out the whole catalog through pytest")
    parser.add_argument("--suite-workers", type=int, default=2,
                        help="xdist workers for the whole catalog in guests (each boots its own; 0: one guest, serial)")
    parser.add_argument("-k", default="", help="only scenarios whose id contains this")
    args = parser.parse_args()
    os.environ["OCI_CONFORMANCE_TAG"] = TAG
    scenarios = [sc for sc in catalog() if args.k in sc.id]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cpus; {args.runtime}; {len(scenarios)} scenarios; "
          f"load average {os.getloadavg()[0]:.2f} (other work on the machine inflates every figure)", flush=True)
    for spec in args.hosts:
        if spec == "local":
            bench_local(args.runtime, scenarios)
        elif spec.startswith("qemu://"):
            bench_guest(spec[len("qemu://"):], args.runtime, scenarios)
        elif spec == "ssh":
            bench_ssh(args.runtime, scenarios)
        else:
            raise SystemExit(f"--hosts {spec}: local, qemu://LAYOUT or ssh")
    for spec in args.hosts:
        if spec.startswith("qemu://") and not args.no_suite:
            whole_catalog_in_guest(spec[len("qemu://"):], args.suite_workers)
    print(f"load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
