"""host_setup bridge_net: a bridged private subnet in the suite's own network namespaces.

It must give reachability on its subnet, leave the host's interfaces and
routes exactly as they were, and remove every namespace (and with them every
link) it made on every way out: success, an error, an interrupt mid-setup
(also while an ip runs), Ctrl-C during a run; what a process killed outright
left, the next run's sweep removes.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conformance.host import bridge_net, session
from conformance.host.drivers import procs
from tests.conftest import REPO, SUITE_ENV, host_leftovers, run_suite, suite_command, write_scenarios

pytestmark = pytest.mark.skipif(bridge_net.unsupported() is not None, reason=f"{bridge_net.unsupported()}")


def _host_network() -> tuple[list[str], str, str]:
    """The host namespace's links, addresses and routes, to compare before and after."""
    ip = lambda *a: subprocess.run(["ip", *a], capture_output=True, text=True, check=True).stdout  # noqa: E731
    return sorted(os.listdir("/sys/class/net")), ip("-o", "addr"), ip("route") + ip("-6", "route")


@pytest.fixture
def tag(monkeypatch, request):
    """A tag of this test's own, so the namespaces it made can be counted exactly."""
    value = "t" + os.urandom(3).hex()
    monkeypatch.setenv("OCI_CONFORMANCE_TAG", value)
    return value


def _namespaces(tag: str) -> list[str]:
    return sorted(glob.glob(f"/run/netns/cf-{tag}-*"))


def test_a_private_subnet_with_a_reachable_peer_and_the_host_untouched(tmp_path, tag):
    before = _host_network()
    with bridge_net.bridge_net(tmp_path) as v:
        assert _namespaces(tag) == sorted([v["net_netns"], v["net_peer_netns"], v["net_netns"][:-4] + "-br"])
        inside = subprocess.run(["nsenter", f"--net={v['net_netns']}", "sh", "-c",
                                 "awk 'NR > 2 { sub(\":\", \"\", $1); print $1 }' /proc/net/dev | sort; "
                                 "ip -o -4 addr show dev eth0; "
                                 f"busybox ping -c 1 -W 2 -I {v['net_addr']} {v['net_peer_addr']}"],
                                capture_output=True, text=True)
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout.split()[:2] == ["eth0", "lo"]
        assert f"inet {v['net_addr']}/24" in inside.stdout and "1 packets received" in inside.stdout
        assert v["net_subnet"] == v["net_addr"].rsplit(".", 1)[0] + ".0/24"
        assert _host_network() == before  # every link lives in the suite's namespaces
    assert _namespaces(tag) == []
    assert _host_network() == before


def test_an_error_in_the_body_still_removes_everything(tmp_path, tag):
    with pytest.raises(RuntimeError):
        with bridge_net.bridge_net(tmp_path):
            assert len(_namespaces(tag)) == 3
            raise RuntimeError("the scenario failed")
    assert _namespaces(tag) == []


@pytest.mark.parametrize("interrupted_batch", [1, 2, 3])
def test_an_interrupt_in_the_middle_of_setup_removes_what_was_made(tmp_path, tag, monkeypatch, interrupted_batch):
    real, calls = bridge_net._ip_batch, []

    def flaky(*args):
        calls.append(args)
        real(*args)
        if len(calls) == interrupted_batch:
            raise KeyboardInterrupt  # the batch took effect, then Ctrl-C arrived before it returned

    monkeypatch.setattr(bridge_net, "_ip_batch", flaky)
    before = _host_network()
    with pytest.raises(KeyboardInterrupt):
        with bridge_net.bridge_net(tmp_path):
            pass
    assert _namespaces(tag) == [] and _host_network() == before


def test_an_interrupt_while_ip_runs_stops_it_before_the_names_are_removed(tmp_path, tag, monkeypatch):
    """Ctrl-C while the first batch runs: ip is killed before the teardown, so it cannot make a namespace
    after the names were removed (here an ip that starts slowly still has them all to make)."""
    def interrupted(pid, timeout):
        raise KeyboardInterrupt

    monkeypatch.setattr(bridge_net, "BRIDGE_IP", ["unshare", "--net", "sh", "-c", 'sleep 0.5; exec ip "$@"', "ip"])
    monkeypatch.setattr(procs, "block_until_exit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with bridge_net.bridge_net(tmp_path):
            pass
    time.sleep(1)  # what an ip left running would have made by now
    assert _namespaces(tag) == []


def test_a_failed_command_is_named_and_nothing_stays(tmp_path, tag, monkeypatch):
    monkeypatch.setattr(bridge_net, "_addressed", lambda address: lambda pid: [f"addr add {address} dev eth9"])
    with pytest.raises(OSError, match=r"failed: .*\(`addr add 198\.18\.\d+\.2/24 dev eth9`\)"):
        with bridge_net.bridge_net(tmp_path):
            pass
    assert _namespaces(tag) == []


_HOLD_A_BRIDGE = """
import sys, time
from pathlib import Path
from conformance.host import bridge_net
with bridge_net.bridge_net(Path(sys.argv[1])):
    print("made", flush=True)
    time.sleep(60)
"""


def test_a_killed_makers_namespaces_are_swept_and_a_live_ones_kept(tmp_path, monkeypatch):
    """SIGKILL leaves the namespaces (no teardown runs); the next run's sweep removes them, by the
    dead pid in their names, and leaves those of a process that still runs.  (A tag of a form the
    project's runs do not make: another suite's sweep, started meanwhile, would take them first.)"""
    tag = "sweep" + os.urandom(3).hex()
    monkeypatch.setenv("OCI_CONFORMANCE_TAG", tag)
    maker = subprocess.Popen([sys.executable, "-c", _HOLD_A_BRIDGE, str(tmp_path)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert maker.stdout is not None and maker.stdout.readline() == "made\n"
    finally:
        maker.kill()
        maker.wait()
    try:
        left = _namespaces(tag)
        assert len(left) == 3 and all(f"-{maker.pid}-" in name for name in left)
        with bridge_net.bridge_net(tmp_path) as live:
            removed = session.sweep_dead(tag)
            assert sorted(removed) == [f"netns {name}" for name in left]
            assert _namespaces(tag) == sorted([live["net_netns"], live["net_peer_netns"], live["net_netns"][:-4] + "-br"])
        assert _namespaces(tag) == []
    finally:
        bridge_net.sweep_dead(tag)  # what a failed assertion left


def test_an_ip_without_netns_attach_makes_the_requirement_unmet(tmp_path, monkeypatch):
    """An iproute2 older than 4.20 cannot name the bridge's namespace: the scenarios skip, saying so."""
    fake = tmp_path / "ip"
    fake.write_text('#!/bin/sh\n[ "$*" = "netns help" ] && { echo "Usage: ip netns add NAME" >&2; exit 255; }\n'
                    'exec "$REAL_IP" "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("REAL_IP", shutil.which("ip") or "ip")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    bridge_net.unsupported.cache_clear()
    try:
        assert bridge_net.unsupported() == "iproute2's `ip` has no `ip netns attach` (iproute2 4.20 added it)"
    finally:
        bridge_net.unsupported.cache_clear()


def test_the_scenarios_pass_on_each_runtime_and_fail_without_the_namespace(tmp_path, no_leftovers):
    before = _host_network()
    run = run_suite(None, tmp_path / "out", "--runtime=ref,runc,crun", "--controls", "-k", "net-bridge")
    for scenario in ("net-bridge-peer-reachable", "testinfra-net-bridge-interfaces"):
        for runtime in ("ref", "runc", "crun"):
            assert run.result(scenario, runtime)["verdict"] == "pass", run.result(scenario, runtime)
    controls = {c["scenario"]: c for c in run.matrix["controls"]}
    ping = controls["net-bridge-peer-reachable"]
    assert ping["verdict"] == "fail" and ping["disabled"] == ["net"]
    # without its namespace the container sees the host's interfaces and sends no packet
    seen = ping["evidence"].split("stdout: expected ")[1].split("; observed ")[1]
    assert seen.startswith("'interfaces: ") and not seen.startswith("'interfaces: eth0 lo\\n")
    assert "peer: reachable" not in seen
    assert controls["testinfra-net-bridge-interfaces"]["verdict"] == "fail"
    assert _host_network() == before


def test_ctrl_c_while_a_container_sits_in_the_bridge_leaves_no_namespace(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", {"b.yaml": """
id: bridged-long
title: sits in the bridged namespace
tags: [net]
control: [net]
host_setup: [bridge_net]
patch:
  linux: {namespaces: {$remove: [{type: network}], $append: [{type: network, path: "{{net_netns}}"}]}}
run: sleep 91
expect: {exit: 0}
"""})
    before = _host_network()
    proc = subprocess.Popen(suite_command(sc, tmp_path / "out", "--runtime=runc"), cwd=REPO, env=SUITE_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _container_in_bridge():
            assert time.monotonic() < deadline and proc.poll() is None, "the container never joined the bridge"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert b"KeyboardInterrupt" in out
    assert _host_network() == before


def _container_in_bridge() -> bool:
    """True once a `sleep 91` runs in the network namespace that this run's bridge_net made."""
    joined = [p for p in host_leftovers() if p.startswith("netns ") and p.endswith("-ctr")]
    inodes = {os.stat(p.split(" ", 1)[1]).st_ino for p in joined}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (open(f"/proc/{pid}/cmdline", "rb").read() == b"sleep\x0091\x00"
                    and os.stat(f"/proc/{pid}/ns/net").st_ino in inodes):
                return True
        except OSError:
            continue
    return False
