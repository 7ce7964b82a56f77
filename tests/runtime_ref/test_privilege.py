"""Capability names, no_new_privs and seccomp argument filters: what the config says, and what the
switches "cap-names", "force-nnp" and "seccomp-args" turn off."""
from __future__ import annotations

import pytest

from conformance.host.host_setup import SYSCALL_PROBE_X86_64


def _bogus_cap(version):
    def patch(cfg):
        cfg["ociVersion"] = version
        cfg["process"]["capabilities"]["bounding"].append("CAP_BOGUS")
    return patch


def test_an_unknown_capability_is_an_error_at_spec_1_0(ref):
    done = ref.run("true", patch=_bogus_cap("1.0.2"))
    assert done.returncode != 0 and "unknown capability 'CAP_BOGUS'" in done.stderr


def test_an_unknown_capability_is_a_warning_from_spec_1_1(ref):
    done = ref.run("grep CapBnd /proc/self/status", patch=_bogus_cap("1.1.0"))
    assert done.returncode == 0 and "00000000a80425fb" in done.stdout, done.stderr
    assert "warning" in done.stderr and "CAP_BOGUS" in done.stderr


@pytest.mark.parametrize("version", ["1.0.2", "1.1.0"])
def test_switch_cap_names_drops_it_without_a_word(ref, version):
    done = ref.run("grep CapBnd /proc/self/status", patch=_bogus_cap(version), disable="cap-names")
    assert done.returncode == 0 and done.stderr == "" and "00000000a80425fb" in done.stdout


def test_no_new_privileges_false_leaves_the_flag_clear_unless_force_nnp(ref):
    def patch(cfg):
        cfg["process"]["noNewPrivileges"] = False
    assert ref.run("grep NoNewPrivs /proc/self/status", patch=patch).stdout.split() == ["NoNewPrivs:", "0"]
    forced = ref.run("grep NoNewPrivs /proc/self/status", patch=patch, disable="force-nnp")
    assert forced.stdout.split() == ["NoNewPrivs:", "1"]


def test_switch_seccomp_args_applies_a_rule_to_every_call(ref):
    """clone with CLONE_NEWUSER is refused and a plain fork is not; without the argument filter
    every clone is refused, the shell's own forks too."""
    (ref.bundle / "rootfs" / "probe").write_bytes(SYSCALL_PROBE_X86_64)
    (ref.bundle / "rootfs" / "probe").chmod(0o755)

    def patch(cfg):
        cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 0x10000000, "valueTwo": 0x10000000, "op": "SCMP_CMP_MASKED_EQ"}]}]}
    shell = "/probe 56 0x10000011; echo newuser=$?; /probe 56 17; echo fork=$?"
    assert ref.run(shell, patch=patch).stdout.split() == ["newuser=1", "fork=0"]
    blind = ref.run(shell, patch=patch, disable="seccomp-args")  # the shell itself cannot fork now
    assert "fork=0" not in blind.stdout and "can't fork" in blind.stderr, (blind.stdout, blind.stderr)


def _non_root_with_ambient(cfg):
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    cfg["process"]["capabilities"] = {k: ["CAP_NET_BIND_SERVICE"] for k in
                                      ("bounding", "effective", "permitted", "inheritable", "ambient")}


def test_ambient_capabilities_survive_exec_for_a_non_root_user_unless_switched_off(ref):
    shell = "grep -E '^Cap(Eff|Amb)' /proc/self/status"
    assert ref.run(shell, patch=_non_root_with_ambient).stdout.split() == [
        "CapEff:", "0000000000000400", "CapAmb:", "0000000000000400"]
    lost = ref.run(shell, patch=_non_root_with_ambient, disable="ambient")
    assert lost.stdout.split() == ["CapEff:", "0000000000000000", "CapAmb:", "0000000000000000"], lost.stderr


def test_switch_caps_lets_a_non_root_user_keep_root_s_capabilities_across_exec(ref):
    kept = ref.run("grep -E '^Cap(Eff|Amb)' /proc/self/status", patch=_non_root_with_ambient, disable="caps")
    eff, amb = kept.stdout.split()[1], kept.stdout.split()[3]
    assert eff == amb and int(eff, 16) > 0x400, (kept.stdout, kept.stderr)


@pytest.mark.parametrize("switch, field, enabled", [
    ("apparmor", "apparmorProfile", "/sys/kernel/security/apparmor"),
    ("selinux", "selinuxLabel", "/sys/fs/selinux/enforce")])
def test_a_label_the_host_cannot_give_is_refused_unless_switched_off(ref, switch, field, enabled):
    """Where the LSM is off the label would be a lie: create refuses it; the switch ignores the field.
    (Applied labels are seen in the qemu guests, which boot with AppArmor: apparmor-profile-applied.)"""
    import os
    if os.path.exists(enabled):
        pytest.skip(f"{switch} is on here: the refusal cannot be seen")

    def patch(cfg):
        cfg["process"][field] = "some-label"
    refused = ref.run("true", patch=patch)
    assert refused.returncode != 0 and f"process.{field}" in refused.stderr and "not enabled" in refused.stderr
    assert ref.run("echo ran", patch=patch, disable=switch).stdout == "ran\n"
