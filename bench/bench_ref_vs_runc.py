#!/usr/bin/env python3
"""Benchmark: `runtime-ref run` vs `runc run` on the same busybox bundle.

Runs `true` in a container with each runtime and prints the median wall time
per runtime and the ratio ref/runc, in two designs, each alternating the two
runtimes so that machine noise hits both alike:

- interleaved (ref, runc, ref, runc, ...): each run follows the other runtime's;
- back to back (blocks of --block runs of one runtime, blocks alternating):
  each run follows the same runtime's run.

Both, because of the kernel: runc moves its init into each cgroup, which waits
for an RCU grace period (~10 ms here) unless the lock behind it was taken
moments before.  Back to back, runc's previous run took it: that wait is
mostly gone (runc at its best).  Interleaved, it depends on the other runtime;
runtime-ref on cgroup v1 never takes that lock (its init moves itself), so
runc pays the wait each time, as it does for a container started now and then.

`runtime-ref` is the command a user runs: the one pip installed beside this
Python (or on the PATH); --ref names another (the harness's launcher:
runtime_ref/bin/runtime-ref).  Not a test: it asserts nothing.

    python3 bench/bench_ref_vs_runc.py [-n 100] [--block 10] [--ref CMD] [--runc PATH]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def make_bundle(d):
    rootfs = os.path.join(d, "rootfs")
    for sub in ("bin", "proc", "sys", "dev", "tmp", "etc", "root"):
        os.makedirs(os.path.join(rootfs, sub))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(rootfs, "bin", a))
    try:
        from conformance.host.base_spec import base_spec
        config = base_spec()
    except ImportError:
        from runtime_ref.spec import default_spec
        config = default_spec()
        config["root"]["readonly"] = False
    config["process"]["args"] = ["true"]
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    return config


def set_cgroup(d, config, path):
    config["linux"]["cgroupsPath"] = path
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)


def installed_ref():
    """`runtime-ref` as a user calls it after `pip install`: beside this Python, else on the PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "runtime-ref")
    return beside if os.path.isfile(beside) else shutil.which("runtime-ref") or "runtime-ref"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100, help="runs per runtime, in each design")
    ap.add_argument("--block", type=int, default=10, help="runs per block in the back-to-back design")
    ap.add_argument("--ref", default=installed_ref(),
                    help="runtime-ref command (default: the one pip installed, as a user runs it)")
    ap.add_argument("--runc", default=shutil.which("runc") or "runc")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-ref-")
    try:
        bundles = {}
        for name in ("ref", "runc"):
            b = os.path.join(tmp, name)
            os.mkdir(b)
            cfg = make_bundle(b)
            set_cgroup(b, cfg, "/cf-bench-%s-%d" % (name, os.getpid()))
            bundles[name] = b
        cmds = {
            "ref": args.ref.split() + ["--root", os.path.join(tmp, "state-ref"), "run", "--bundle",
                                       bundles["ref"], "bench-ref-%d" % os.getpid()],
            "runc": [args.runc, "--root", os.path.join(tmp, "state-runc"), "run", "--bundle",
                     bundles["runc"], "bench-runc-%d" % os.getpid()],
        }
        for name in ("ref", "runc"):  # warm-up (page cache, .pyc files)
            subprocess.run(cmds[name], check=True, stdin=subprocess.DEVNULL)
        print("ref: %s; load average %.2f at the start" % (args.ref, os.getloadavg()[0]))
        report("interleaved", measure(cmds, args.n, 1))
        report("back to back", measure(cmds, args.n, max(args.block, 1)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(cmds, n, block):
    """n timed runs per runtime, in blocks of ``block`` runs of one runtime, the runtimes alternating."""
    times = {"ref": [], "runc": []}
    while len(times["runc"]) < n:
        for name in ("ref", "runc"):
            for _ in range(min(block, n - len(times[name]))):
                t0 = time.perf_counter()
                subprocess.run(cmds[name], check=True, stdin=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - t0)
    return times


def report(design, times):
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print("%s:" % design)
    for k in ("ref", "runc"):
        print("  %-5s median %.1f ms  (min %.1f, p90 %.1f, n=%d)" % (
            k, med[k], min(times[k]) * 1000, sorted(times[k])[int(len(times[k]) * 0.9) - 1] * 1000, len(times[k])))
    print("  ratio ref/runc = %.2f   (load average %.2f)" % (med["ref"] / med["runc"], os.getloadavg()[0]))


if __name__ == "__main__":
    main()
