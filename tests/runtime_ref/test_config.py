"""Config handling: what is refused (with the field's name), and seccomp details."""
import pytest


@pytest.mark.parametrize("patch,words", [
    (lambda c: c["process"].update(terminal=True), "process.terminal"),
    (lambda c: c["linux"].update(intelRdt={"closID": "x"}), "linux.intelRdt"),
    (lambda c: c["process"].update(apparmorProfile="docker-default"), "process.apparmorProfile"),
    (lambda c: c["linux"]["resources"].update(hugepageLimits=[{"pageSize": "3MB", "limit": 1}]),
     "no huge pages of size '3MB'"),
    (lambda c: c["linux"]["resources"].update(memory={"kernel": 1 << 20}), "linux.resources.memory.kernel"),
    (lambda c: c["linux"]["seccomp"].update(defaultAction="SCMP_ACT_NOTIFY"), "SCMP_ACT_NOTIFY"),
    (lambda c: c["linux"]["seccomp"]["syscalls"].append({"names": ["nosuchcall"], "action": "SCMP_ACT_ERRNO"}),
     "unknown system call 'nosuchcall'"),
    (lambda c: c["process"]["capabilities"]["bounding"].append("CAP_BOGUS"), "unknown capability 'CAP_BOGUS'"),
    (lambda c: c["linux"]["namespaces"].append({"type": "bogus"}), "linux.namespaces"),
    (lambda c: c["linux"].update(sysctl={"kernel.panic": "1"}), "kernel.panic is not namespaced"),
    # issue 16, bug 5: as runc, the hostname has its own field (and a UTS namespace of ours changes nothing)
    (lambda c: c["linux"].update(sysctl={"kernel.hostname": "x"}), 'conflicts with the "hostname" field'),
    (lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward": "1"}) or c["linux"].update(
        namespaces=[n for n in c["linux"]["namespaces"] if n["type"] != "network"]), "needs a new network"),
    (lambda c: c.update(ociVersion="2.0.0"), "ociVersion"),
    (lambda c: c["mounts"].append({"destination": "/x", "type": "tmpfs", "source": "t",
                                   "options": ["tmpcopyup"]}), "tmpcopyup"),
])
def test_unsupported_config_is_refused_by_name(ref, patch, words):
    done = ref.run("true", patch=patch)
    assert done.returncode != 0
    assert words in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("runtime-ref: ")


def test_unknown_properties_are_ignored_unless_extensions_is_off(ref):
    """config.md (extensibility): an unknown property MUST NOT be an error; the switch refuses it."""
    def patch(c):
        c["org.test.extension"] = {"x": 1}
        c["linux"]["bogusField"] = 1
    assert ref.run("true", patch=patch).returncode == 0
    refused = ref.run("true", patch=patch, disable="extensions")
    assert refused.returncode != 0 and "unknown to runtime-ref" in refused.stderr


@pytest.mark.parametrize("patch", [
    lambda c: c["process"]["capabilities"]["bounding"].append("CAP_BOGUS"),
    lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}),
    lambda c: c.update(ociVersion="invalid"),
    lambda c: c["linux"]["namespaces"].append({"type": "user"}),
])
def test_validate_switch_takes_what_would_be_refused(ref, patch):
    assert ref.run("true", patch=patch).returncode != 0
    done = ref.run("true", patch=patch, disable="validate")
    assert done.returncode == 0, done.stderr


def test_bad_json(ref):
    (ref.bundle / "config.json").write_text("{not json")
    done = ref.cmd("run", "--bundle", str(ref.bundle), ref.new_id())
    assert done.returncode != 0 and "is not valid JSON" in done.stderr


def test_missing_executable_is_reported_at_create(ref):
    done = ref.run("true", patch=lambda c: c["process"].update(args=["/no/such"]))
    assert done.returncode != 0 and "/no/such" in done.stderr


def _seccomp(rules, default="SCMP_ACT_ALLOW"):
    def patch(cfg):
        cfg["linux"]["seccomp"] = {"defaultAction": default, "architectures": ["SCMP_ARCH_X86_64"],
                                   "syscalls": rules}
    return patch


def test_seccomp_errno_ret(ref):
    done = ref.run("mkdir /tmp/d 2>&1; echo rc=$?",
                   patch=_seccomp([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28}]))
    assert "No space left on device" in done.stdout, done.stdout + done.stderr


def test_seccomp_kill(ref):
    done = ref.run("sh -c 'mkdir /tmp/d'; echo rc=$?",
                   patch=_seccomp([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}]))
    assert "rc=159" in done.stdout  # 128 + SIGSYS


def test_seccomp_argument_conditions(ref):
    # personality(PER_LINUX32 = 8) is refused; personality(PER_LINUX = 0) is allowed
    rule = {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
    done = ref.run("linux32 true; echo a=$?; linux64 true; echo b=$?", patch=_seccomp([rule]))
    assert "a=1" in done.stdout and "b=0" in done.stdout, done.stdout + done.stderr


def test_seccomp_masked_eq_and_default_errno(ref):
    rules = [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
              "args": [{"index": 0, "value": 0xFF, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}]
    allow_all_else = [{"names": sorted(_all_but("personality")), "action": "SCMP_ACT_ALLOW"}]
    done = ref.run("linux32 true; echo a=$?; linux64 true; echo b=$?",
                   patch=_seccomp(rules + allow_all_else, default="SCMP_ACT_ERRNO"))
    assert "a=1" in done.stdout and "b=0" in done.stdout, done.stdout + done.stderr


def _all_but(name):
    from runtime_ref.seccomp import table
    return set(table("X86_64")) - {name}


def test_seccomp_program_checks_architecture():
    from runtime_ref.seccomp import compile
    prog, _ = compile({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"],
                       "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]})
    ins = [prog[i:i + 8] for i in range(0, len(prog), 8)]
    # first instruction loads seccomp_data.arch (offset 4)
    assert ins[0][:2] == b"\x20\x00" and int.from_bytes(ins[0][4:], "little") == 4
    ks = [int.from_bytes(i[4:], "little") for i in ins]
    assert 165 in ks and 21 in ks  # mount on x86_64 and on i386
