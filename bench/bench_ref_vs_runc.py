#!/usr/bin/env python3
"""Benchmark: `runtime-ref run` vs `runc run` on the same busybox bundle.

Runs `true` in a container with each runtime, interleaved (ref, runc, ref,
runc, ...) so that machine noise hits both alike, and prints the median wall
time per runtime and the ratio ref/runc.  `runtime-ref` is the command a user
runs: the one pip installed beside this Python (or on the PATH); --ref
names another (the harness's launcher: runtime_ref/bin/runtime-ref).  Not a
test: it asserts nothing.

    python3 bench/bench_ref_vs_runc.py [-n 100] [--ref CMD] [--runc PATH]
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
    ap.add_argument("-n", type=int, default=100, help="runs per runtime")
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
        times = {"ref": [], "runc": []}
        for name in ("ref", "runc"):  # warm-up (page cache, .pyc files)
            subprocess.run(cmds[name], check=True, stdin=subprocess.DEVNULL)
        for _ in range(args.n):
            for name in ("ref", "runc"):
                t0 = time.perf_counter()
                subprocess.run(cmds[name], check=True, stdin=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        for k in ("ref", "runc"):
            print("%-5s median %.1f ms  (min %.1f, p90 %.1f, n=%d)" % (
                k, med[k], min(times[k]) * 1000,
                sorted(times[k])[int(len(times[k]) * 0.9) - 1] * 1000, len(times[k])))
        print("ratio ref/runc = %.2f   (ref: %s; load average %.2f)" % (med["ref"] / med["runc"], args.ref,
                                                                   os.getloadavg()[0]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
