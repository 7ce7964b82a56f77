#!/usr/bin/env python3
"""Benchmark: what the harness adds on top of the runtimes themselves.

For each runtime, prints
  - the suite's wall time: ``pytest conformance --runtime=R`` on the whole
    catalog, serial, as a user runs it (start-up and collection included);
  - the bare time: the sum, over the same scenarios, of one
    ``R run --bundle B`` each, B being the very bundle the harness builds
    (same config.json, same rootfs, same global flags and adaptations), timed
    around the runtime process alone; stdin is an empty pipe so ``read _`` ends (a process with a
    terminal gets a pty of its own: conformance/host/bare.py);
  - their ratio (goal ≤ 1.3 on runc): ``--repeat`` pairs (default 3), each a suite run and its
    bare runs, in turn one or the other first, the pair of the median ratio printed with every
    pair's ratio beside it.
Then the wall time of the full matrix of ref, runc and crun with ``-n 2``, every
scenario of the catalog (goal < 20 s on this 2-core machine), runsc on its own line, the cost of
``--controls`` (the negative controls: one ref run of the scenario per
scenario and switch set, whatever number of expectations it proves; goal:
no more than one ref container per scenario and switch set, the one more
that a scenario checking `RUNTIME run`'s own exit takes on every runtime
aside), and the harness's peak memory (the pytest processes only —
controller and xdist workers, summed — never the runtimes or containers).

The engine lane (``containerd/NAME``, when containerd is installed): one
serial run of the whole catalog on each bare column and its containerd twin
side by side, and per scenario the time of each cell (pytest's own, from
junit: bundle, image import, run, observation, removal), bare beside
containerd; then per column the mean per scenario and the ratio (goal ≤ 2),
the first cell of each column apart (it carries the column's one-off costs:
the sandbox probe, and on the containerd columns the private daemon's start,
which is also timed alone).

Not a test: it asserts nothing.  Everything it makes is removed.

    python3 bench/bench_suite.py                        # ref runc crun, then runsc
    python3 bench/bench_suite.py --runtimes runc --no-matrix
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
    # As a user runs it: in the project's environment (ci/setup.sh), not with whatever
    # pytest plugins the system Python happens to carry (they cost seconds of start-up).
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402  (only in the project's environment, hence after the re-exec)

from conformance.catalog.loader import load_scenarios  # noqa: E402
from conformance.host import hostinfo  # noqa: E402
from conformance.host.bare import bare_runs as time_bare_runs  # noqa: E402
from conformance.host.engine import daemon  # noqa: E402
from conformance.host.session import RunSession  # noqa: E402
from conformance.reporting.document import proof_totals  # noqa: E402

TAG = "bench" + secrets.token_hex(3)


# -- the harness's peak memory ------------------------------------------------------
class PeakMemory(threading.Thread):
    """The harness's peak memory: each of its Python processes' own high-water mark of RSS (VmHWM;
    not runtimes, not containers), summed, read every ``interval``.

    A process's high-water mark is its peak whenever it is read, so a slow sampler loses nothing
    but what a process adds in its last ``interval``.  Sampling the current RSS every 20 ms
    instead (psutil's walk of the whole process table each time) took ~10 % of a CPU from the very
    suite it timed: 0.1-0.2 s of a 5 s serial run, which the bare side never paid.
    """

    def __init__(self, root_pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.interval = root_pid, interval
        self.marks: dict[int, int] = {}  # pid -> its high-water mark (bytes), as last read
        self.done = threading.Event()

    @property
    def peak(self) -> int:
        return sum(self.marks.values())

    @staticmethod
    def _is_harness(proc: psutil.Process) -> bool:
        try:
            args = proc.cmdline()[1:]
            while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
                args = args[1:]  # the interpreter's own options (runtime-ref's launcher: -I -S)
            program = " ".join(args[:2])  # what the Python runs: a script, ``-m module``, ``-c code``
            return ("python" in os.path.basename(proc.exe())
                    and "runtime_ref" not in program and "runtime-ref" not in program)
        except (psutil.Error, OSError):
            return False

    @staticmethod
    def _high_water(pid: int) -> int:
        try:
            for row in Path(f"/proc/{pid}/status").read_text().splitlines():
                if row.startswith("VmHWM:"):
                    return int(row.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
            for proc in [root, *root.children(recursive=True)]:
                if self._is_harness(proc):
                    self.marks[proc.pid] = max(self.marks.get(proc.pid, 0), self._high_water(proc.pid))
        except psutil.Error:
            pass


# -- suite runs -----------------------------------------------------------------------
def catalog() -> list:
    """The scenarios both sides run: all but those whose entrypoint ends only when the harness acts
    (``steps`` with a kill: a bare ``run`` of them would only measure their timeout)."""
    return [sc for path in sorted((REPO / "scenarios").glob("*.yaml")) for sc in load_scenarios(path)
            if not getattr(sc, "steps", None)]


def _deselect() -> list[str]:
    """The left-out scenarios by node id (``--deselect``, an exact prefix per cell).

    Not ``-k "not ID and …"``: a keyword is matched as a substring (``not
    apparmor-profile-applied`` also dropped apparmor-profile-applied-userns, which the bare
    side ran), and 80-odd of them are evaluated against every item's keywords, which cost the
    suite's side 0.05-0.2 s of collection a user's run never pays."""
    return [f"--deselect={path.relative_to(REPO)}::{sc.id}["
            for path in sorted((REPO / "scenarios").glob("*.yaml")) for sc in load_scenarios(path)
            if getattr(sc, "steps", None)]


def run_suite(runtimes: str, *extra: str, keep: dict | None = None, whole: bool = False) -> tuple[float, int, str]:
    """(wall seconds, peak harness RSS in bytes, last line) of one ``pytest conformance`` run
    (``keep``: filled with the run's matrix.json; ``whole``: the lifecycle scenarios too)."""
    out = Path(tempfile.mkdtemp(prefix=f"{TAG}-reports-"))
    cmd = [sys.executable, "-m", "pytest", "conformance", f"--runtime={runtimes}", f"--matrix-dir={out}",
           "-p", "no:cacheprovider", "-q", *([] if whole else _deselect()), *extra]
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=user_env())
        meter = PeakMemory(proc.pid)
        meter.start()
        output, _ = proc.communicate()
        wall = time.perf_counter() - started
        meter.done.set()
        meter.join()
        summary = next((line for line in reversed(output.splitlines()) if " in " in line and line.startswith("=")),
                       output.strip().splitlines()[-1] if output.strip() else "")
        if keep is not None and (out / "matrix.json").exists():
            keep.update(json.loads((out / "matrix.json").read_text()))
        return wall, meter.peak, summary.strip("= ")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def user_env() -> dict[str, str]:
    """This environment as a user's shell has it: without PYTHONDONTWRITEBYTECODE, which some
    tool environments set and which makes every pytest start recompile (and re-rewrite) the
    harness's modules."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "OCI_CONFORMANCE_TAG": TAG}


# -- bare runtime runs of the same bundles ---------------------------------------------
def bare_runs(name: str) -> tuple[float, int]:
    """(sum of ``RUNTIME run`` wall times, number of bundles) over the catalog's runnable scenarios:
    the very bundles the suite builds (conformance/host/bare.py, which bench_hosts.py uses on other hosts)."""
    session = RunSession()
    try:
        times = [t for t in time_bare_runs(catalog(), name, session) if t is not None]
    finally:
        session.close()
    return sum(times), len(times)


def line(name: str, wall: float, bare: float, count: int, peak: int, summary: str) -> str:
    added = (wall - bare) / count * 1000 if count else 0.0
    return (f"{name:<6} suite {wall:6.1f} s   bare run × {count}: {bare:6.1f} s   ratio {wall / bare:4.2f}"
            f"   (+{added:.0f} ms per scenario)   peak harness RSS {peak / 2**20:4.0f} MiB   ({summary})")


def controls_cost() -> str:
    """What ``--controls`` adds to a ref run of the whole catalog: runs, containers, wall time (serial)."""
    plain, _, _ = run_suite("ref", whole=True)
    doc: dict = {}
    with_controls, _, summary = run_suite("ref", "--controls", keep=doc, whole=True)
    scenarios = {sc.id: sc for path in sorted((REPO / "scenarios").glob("*.yaml")) for sc in load_scenarios(path)}
    ran = [c for c in doc.get("controls", []) if c["verdict"] != "skip"]
    pairs = {(c["scenario"], tuple(c["disabled"])) for c in ran}
    # a scenario that checks `RUNTIME run`'s own exit but goes through create/start takes one more
    # container on every runtime (executor._second_run), and so does each of its controls
    second = sum(1 for c in ran if c["scenario"] in scenarios and scenarios[c["scenario"]].wants_runtime_exit
                 and scenarios[c["scenario"]].needs_lifecycle)
    n = proof_totals(doc)
    return (f"--controls on ref: {len(ran)} control runs = {len(pairs)} scenario × switch-set pairs, one run each "
            f"({len(ran) + second} ref containers: {second} of them the second `RUNTIME run` of a scenario that "
            f"checks its exit); +{with_controls - plain:.1f} s serial (ref {plain:.1f} s, with controls "
            f"{with_controls:.1f} s); expectations {n['proven']} proven, {n['corroborating']} corroborating, "
            f"{n['unproven']} unproven   ({summary})")


def cell_times(junit: Path) -> dict[tuple[str, str], float]:
    """(scenario, column) -> pytest's seconds for that cell, in the order the run took them."""
    times: dict[tuple[str, str], float] = {}
    for case in ET.parse(junit).iter("testcase"):
        name = case.get("name", "")
        if "[" in name and name.endswith("@local]"):
            scenario, _, column = name[:-len("@local]")].partition("[")
            times[(scenario, column)] = float(case.get("time", 0))
    return times


def daemon_start() -> float:
    """Seconds from starting a private containerd to its first answer (then it is stopped and removed)."""
    base = Path(tempfile.mkdtemp(prefix=f"oci-conformance-{TAG}-engine-")) / "containerd"
    started = time.perf_counter()
    engine = daemon.Daemon.start(base)
    took = time.perf_counter() - started
    engine.stop()
    shutil.rmtree(base.parent, ignore_errors=True)
    return took


def engine_costs(names: list[str]) -> list[str]:
    """Each bare column beside its containerd twin, per scenario, from one serial run of the catalog."""
    columns = [c for n in names for c in (n, f"containerd/{n}")]
    junit = Path(tempfile.mkdtemp(prefix=f"{TAG}-junit-")) / "junit.xml"
    try:
        wall, _, summary = run_suite(",".join(columns), f"--junitxml={junit}", whole=True)
        times = cell_times(junit)
    finally:
        shutil.rmtree(junit.parent, ignore_errors=True)
    first = {c: next(s for (s, col) in times if col == c) for c in columns if any(col == c for _, col in times)}
    scenarios = sorted({s for s, _ in times})
    out = [f"engine lane: {','.join(columns)}, serial, whole catalog: {wall:.1f} s   ({summary})",
           "per scenario, ms (pytest's time for the cell: bundle, image import, run, observation, removal):",
           f"{'scenario':<46}" + "".join(f"{c:>17}" for c in columns)]
    for scenario in scenarios:
        out.append(f"{scenario:<46}" + "".join(
            f"{times[(scenario, c)] * 1000:>16.0f}{'*' if first.get(c) == scenario else ' '}"
            if (scenario, c) in times else f"{'—':>17}" for c in columns))
    out.append("* the column's first cell: its one-off costs (sandbox probe; the daemon's start), counted once")
    for name in names:
        engine = f"containerd/{name}"
        shared = [s for s in scenarios if (s, name) in times and (s, engine) in times
                  and s not in (first.get(name), first.get(engine))]
        if not shared:
            continue
        bare = sum(times[(s, name)] for s in shared) / len(shared)
        via = sum(times[(s, engine)] for s in shared) / len(shared)
        out.append(f"{engine:<17} {via * 1000:5.0f} ms per scenario against {name}'s {bare * 1000:5.0f} ms: "
                   f"ratio {via / bare:4.2f} (goal ≤ 2) over {len(shared)} scenarios; first cell "
                   f"{times[(first[engine], engine)] * 1000:.0f} ms against {times[(first[name], name)] * 1000:.0f} ms")
    out.append(f"a private containerd's start, alone: {daemon_start() * 1000:.0f} ms (once per session and host)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtimes", default="ref,runc,crun", help="compared one by one (default: ref,runc,crun)")
    ap.add_argument("--no-runsc", action="store_true", help="leave out runsc's own line")
    ap.add_argument("--no-matrix", action="store_true", help="leave out the full -n 2 matrix")
    ap.add_argument("--no-controls", action="store_true", help="leave out the cost of --controls")
    ap.add_argument("--no-engine", action="store_true", help="leave out the containerd columns beside the bare ones")
    ap.add_argument("--repeat", type=int, default=3, help="suite/bare pairs per runtime, alternating; the pair of the "
                                                          "median ratio is printed (default: 3)")
    args = ap.parse_args()
    names = [n for n in args.runtimes.split(",") if n]
    print(f"host: {hostinfo.profile()['os']}, kernel {hostinfo.profile()['kernel']}, "
          f"{os.cpu_count()} cpus, cgroup {hostinfo.profile()['cgroup']}; {time.strftime('%Y-%m-%d %H:%M')}; "
          f"python {sys.executable}; load average {os.getloadavg()[0]:.2f} (other work on the machine "
          "inflates every figure)")
    peaks = []
    for name in names + ([] if args.no_runsc or not shutil.which("runsc") else ["runsc"]):
        pairs = []
        for turn in range(max(args.repeat, 1)):  # suite and bare alternate: noise on the machine hits both alike,
            if turn % 2:                            # and each goes first in every other pair (ABBA), so that
                bare, count = bare_runs(name)       # neither always inherits what the other left (a warm CPU)
                wall, peak, summary = run_suite(name)
            else:
                wall, peak, summary = run_suite(name)
                bare, count = bare_runs(name)
            pairs.append((wall / bare if bare else float("inf"), wall, bare, count, peak, summary))
            peaks.append(peak)
        _, wall, bare, count, peak, summary = sorted(pairs)[len(pairs) // 2]  # the pair of the median ratio
        spread = f"   ratios of {len(pairs)} pairs: {', '.join(f'{p[0]:.2f}' for p in pairs)}" if len(pairs) > 1 else ""
        print(line(name, wall, bare, count, peak, summary) + spread, flush=True)
    if not args.no_matrix:
        wall, peak, summary = run_suite(",".join(names), "-n", "2", whole=True)  # every scenario, steps too
        peaks.append(peak)
        print(f"matrix {','.join(names)} -n 2, whole catalog: {wall:.1f} s (goal < 20 s)   peak harness RSS "
              f"{peak / 2**20:.0f} MiB   ({summary})", flush=True)
    if not args.no_engine and daemon.binary():
        for text in engine_costs([n for n in names if n != "runsc"]):
            print(text, flush=True)
    if not args.no_controls:
        print(controls_cost(), flush=True)
    print(f"harness peak memory: {max(peaks, default=0) / 2**20:.0f} MiB (pytest controller + workers, RSS summed); "
          f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
