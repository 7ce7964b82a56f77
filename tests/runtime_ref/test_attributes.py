"""The process's kernel attributes (attributes.py): each applied, each checked at create, and each
left alone by its switch (the negative controls of the process-* scenarios)."""
from __future__ import annotations

import os

import pytest

from conftest import reap


def _patch(**fields):
    def patch(cfg):
        for where, value in fields.items():
            section, key = where.split("__")
            cfg.setdefault(section, {})[key] = value
    return patch


# switch -> (shell, patch, expected stdout with the field applied, expected with the switch off)
CASES = {
    "oom-score-adj": ("cat /proc/self/oom_score_adj", _patch(process__oomScoreAdj=500),
                      "500", open("/proc/self/oom_score_adj").read().strip()),
    "scheduler": ("grep ^policy /proc/self/sched | tr -d ' '; cut -d' ' -f19 /proc/self/stat",
                  _patch(process__scheduler={"policy": "SCHED_BATCH", "nice": 10}), "policy:3\n10", "policy:0\n0"),
    "ioprio": ("ionice -p $$", _patch(process__ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 4}),
               "best-effort: prio 4", "none: prio 0"),
    "personality": ("uname -m", _patch(linux__personality={"domain": "LINUX32"}), "i686", os.uname().machine),
    "mempolicy": ("grep -c ' bind:0 ' /proc/self/numa_maps | sed 's/^[1-9][0-9]*$/bound/'",
                  _patch(linux__memoryPolicy={"mode": "MPOL_BIND", "nodes": "0"}), "bound", "0"),
    "home": ("echo $HOME", _patch(process__env=["PATH=/bin"], process__user={"uid": 65534, "gid": 65534}),
             "/nonexistent", ""),
    "args-lookup": ("unused", _patch(process__cwd="/bin"), "found", ""),
}


@pytest.mark.parametrize("switch", sorted(CASES))
def test_attribute_applied_and_switched_off(ref, switch):
    shell, patch, applied, left_alone = CASES[switch]
    if switch == "mempolicy" and not os.path.exists("/proc/self/numa_maps"):
        pytest.skip("the kernel has no NUMA support (/proc/self/numa_maps)")

    def full_patch(cfg):
        patch(cfg)
        if switch == "args-lookup":  # ./busybox from /bin: found only relative to the cwd
            cfg["process"]["args"] = ["./busybox", "echo", "found"]
    on = ref.run(shell, patch=full_patch)
    assert on.returncode == 0 and on.stdout.strip() == applied, (on.stdout, on.stderr)
    off = ref.run(shell, patch=full_patch, disable=switch)
    if switch == "args-lookup":
        assert off.returncode != 0 and "./busybox" in off.stderr, (off.stdout, off.stderr)
    else:
        assert off.returncode == 0 and off.stdout.strip() == left_alone, (off.stdout, off.stderr)


BAD = {
    "scheduler": _patch(process__scheduler={"policy": "SCHED_DEADLINE", "runtime": 30000000, "deadline": 20000000}),
    "mempolicy": _patch(linux__memoryPolicy={"mode": "MPOL_PREFERRED", "nodes": "0",
                                             "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}),
    "oom-score-adj": _patch(process__oomScoreAdj=1001),
}


@pytest.mark.parametrize("switch", sorted(BAD))
def test_a_value_the_kernel_refuses_is_refused_at_create_unless_switched_off(ref, switch):
    refused = ref.run("true", patch=BAD[switch])
    assert refused.returncode != 0 and refused.stderr.startswith("runtime-ref: "), refused.stderr
    assert ref.run("true", patch=BAD[switch], disable=switch).returncode == 0


@pytest.mark.parametrize("policy", [{}, {"mode": "BAD_MODE"}, {"mode": "MPOL_BIND"}, {"mode": "MPOL_LOCAL", "nodes": "0"},
                                    {"mode": "MPOL_PREFERRED", "nodes": "bad"},
                                    {"mode": "MPOL_PREFERRED", "nodes": "10284838"},
                                    {"mode": "MPOL_PREFERRED", "nodes": "0", "flags": ["MPOL_F_NUMA_BALANCING"]}])
def test_malformed_memory_policies_are_refused(ref, policy):
    done = ref.run("true", patch=_patch(linux__memoryPolicy=policy))
    assert done.returncode != 0 and "linux.memoryPolicy" in done.stderr, done.stderr


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")
def test_exec_cpu_affinity_initial_then_final(ref):
    def patch(cfg):
        cfg["process"]["execCPUAffinity"] = {"initial": "0", "final": "1"}
    cfg = dict(ref.config)
    patch(cfg)
    for disable, want in ((None, "1"), ("cpu-affinity", f"0-{os.cpu_count() - 1}")):
        cid = ref.create(["sleep", "91"], config=cfg, disable=disable)
        pid = ref.state(cid)["pid"]
        ref.cmd("start", cid)
        done = ref.cmd("exec", cid, "sh", "-c", "grep Cpus_allowed_list /proc/self/status")
        assert done.stdout.split()[-1] == want, (disable, done.stdout, done.stderr)
        ref.cmd("kill", cid, "KILL")
        reap(pid)
        ref.cmd("delete", cid)
