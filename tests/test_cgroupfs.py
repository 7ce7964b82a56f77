"""cgroup layout detection and file locations for v1, hybrid and v2 hosts."""
from pathlib import Path

from conformance.host import cgroupfs

V1_LINE = "30 25 0:26 / /sys/fs/cgroup/{c} rw,nosuid shared:9 - cgroup cgroup rw,{c}"
V2_LINE = "29 25 0:25 / {mp} rw,nosuid shared:8 - cgroup2 cgroup2 rw,nsdelegate"
HYBRID = "\n".join([V1_LINE.format(c=c) for c in ("memory", "pids", "cpu,cpuacct")]
                   + [V2_LINE.format(mp="/sys/fs/cgroup/unified")])
PURE_V2 = V2_LINE.format(mp="/sys/fs/cgroup")


def test_layouts_are_told_apart():
    assert cgroupfs.layout(cgroupfs.mounts(HYBRID)) == "hybrid"
    assert cgroupfs.layout(cgroupfs.mounts(PURE_V2)) == "v2"
    assert cgroupfs.layout(cgroupfs.mounts("\n".join(HYBRID.splitlines()[:3]))) == "v1"


def test_combined_v1_controllers_share_a_mount():
    m = cgroupfs.mounts(HYBRID)
    assert m["cpu"] == m["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")


def test_hybrid_reads_v1_files_and_v2_reads_unified_files():
    procs = {"memory": "/cf-1", "pids": "/cf-1", "": "/cf-1"}
    path, _ = cgroupfs.locate("memory.oom_kill", procs, cgroupfs.mounts(HYBRID))
    assert path == Path("/sys/fs/cgroup/memory/cf-1/memory.oom_control")
    path, _ = cgroupfs.locate("memory.oom_kill", {"": "/cf-1"}, cgroupfs.mounts(PURE_V2))
    assert path == Path("/sys/fs/cgroup/cf-1/memory.events")
    path, where = cgroupfs.locate("cpu.quota", {"": "/cf-1"}, cgroupfs.mounts(PURE_V2))
    assert path.name == "cpu.max" and where.field == 0


def test_values_are_parsed_from_keyed_and_field_files(tmp_path):
    (tmp_path / "cf-1").mkdir()
    (tmp_path / "cf-1" / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    (tmp_path / "cf-1" / "cpu.max").write_text("50000 100000\n")
    mount_map = {"": tmp_path}
    assert cgroupfs.read_value("memory.oom_kill", {"": "/cf-1"}, mount_map) == "1"
    assert cgroupfs.read_value("cpu.period", {"": "/cf-1"}, mount_map) == "100000"


def test_this_host_is_detected():
    assert cgroupfs.layout() in ("v1", "v2", "hybrid")
