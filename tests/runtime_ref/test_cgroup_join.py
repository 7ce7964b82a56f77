"""How the init gets into its cgroups: on cgroup v1 it moves itself, first thing after the clone.

Moving a process (a pid into cgroup.procs) waits for an RCU grace period; a
thread that moves itself ("0" into v1's ``tasks``) does not, and a freshly
cloned init has one thread (runtime_ref/cgroups.py, self_join_files).  What
must hold whichever way it gets there: the container's processes are in the
container's cgroup in every hierarchy, with or without a user namespace (the
``tasks`` files are opened by the runtime, as the host's root), and the move is
the whole process, not a thread of it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import LAUNCHER, REPO

sys.path.insert(0, str(REPO))
from runtime_ref import cgroups  # noqa: E402


def _v1() -> bool:
    return cgroups.detect()[0] == "v1"


def _in_own_userns(cfg: dict) -> None:
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]


@pytest.mark.parametrize("userns", [False, True], ids=["host-user", "user-namespace"])
def test_the_init_is_in_the_container_cgroup_of_every_hierarchy(ref, userns):
    done = ref.run("cat /proc/self/cgroup", patch=_in_own_userns if userns else None)
    assert done.returncode == 0, done.stderr
    cid = ref.ids[-1]
    lines = [line.split(":", 2) for line in done.stdout.split()]
    hierarchies = cgroups.detect()[1]
    placed = {ctrl: path for _, ctrls, path in lines for ctrl in (ctrls.split(",") if ctrls else [""])}
    for ctrl in hierarchies:
        assert placed.get(ctrl) == f"/{cid}", (ctrl, done.stdout)


@pytest.mark.skipif(not _v1(), reason="the self-join is cgroup v1's (v2 moves the init from the runtime)")
def test_a_child_of_one_thread_joins_with_its_whole_process(tmp_path):
    """join_self moves the writing thread; for a forked child (one thread) that is the process: the
    cgroup's cgroup.procs lists it, in every hierarchy."""
    name = f"cf-rtjoin{os.getpid()}"
    cg = cgroups.create("/" + name, {}, frozenset())
    try:
        fds = cgroups.self_join_files(cg)
        assert len(fds) == len(cg["leaves"]) > 0
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            try:
                cgroups.join_self(fds)
                os.write(w, b"j")
                time.sleep(5)
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)
        os.close(w)
        try:
            assert os.read(r, 1) == b"j"
            for leaf in cg["leaves"]:
                assert cgroups.pids([leaf]) == [pid], leaf
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(r)
    finally:
        cgroups.remove(cg["created"])
    assert not any(os.path.exists(d) for d in cg["created"])


@pytest.mark.skipif(not _v1(), reason="v2: the runtime moves the init")
@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_the_runtime_never_moves_the_init_on_v1(ref):
    """No cgroup.procs opened for writing, by the runtime, a thread of it or the init (strace -f); the
    init's ``tasks`` files are what the runtime opens instead."""
    cid = ref.new_id()
    ref.write_config(None, cid)
    log = ref.tmp / "strace.log"
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(log), str(LAUNCHER), "--root",
                           str(ref.root), "run", "--bundle", str(ref.bundle), cid],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    opened = log.read_text()
    assert 'cgroup.procs", O_WRONLY' not in opened, opened
    assert '/tasks", O_WRONLY' in opened, opened
