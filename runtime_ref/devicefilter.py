"""cgroup v2 device rules: an eBPF program attached to the container's cgroup.

cgroup v1 had a ``devices`` controller with allow/deny files; v2 replaced it
with a BPF_PROG_TYPE_CGROUP_DEVICE program that the kernel runs on every
open and mknod of a device node, with ``struct bpf_cgroup_dev_ctx { u32
access_type /* access << 16 | type */; u32 major; u32 minor; }`` in r1; it
returns 1 to allow and 0 to refuse.  We compile the rules the way runc's
devicefilter does: the first matching rule decides, else the default.
"""
from __future__ import annotations

import os

from . import linux as L
from .errors import Error

SYS_bpf = 321
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE, BPF_CGROUP_DEVICE = 15, 6
BPF_F_ALLOW_MULTI = 2
TYPES = {"c": 2, "b": 1}                     # BPF_DEVCG_DEV_CHAR, _BLOCK
ACCESS = {"m": 1, "r": 2, "w": 4}            # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE


def _ins(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One eBPF instruction (8 bytes)."""
    return (code.to_bytes(1, "little") + bytes(((src << 4) | dst,))
            + off.to_bytes(2, "little", signed=True) + imm.to_bytes(4, "little", signed=True))


def _parse(rule: str) -> tuple[int | None, int | None, int | None, int]:
    """'c 1:3 rwm' -> (type or None, major or None, minor or None, access mask)."""
    kind, nums, acc = rule.split()
    major, minor = nums.split(":")
    return (TYPES.get(kind), None if major == "*" else int(major),
            None if minor == "*" else int(minor), sum(ACCESS[a] for a in acc))


def program(rules: list[tuple[bool, str]]) -> bytes:
    """[(allow, 'c 1:3 rwm'), ...] in v1 order -> eBPF bytes.

    v1 semantics, reduced to what runtimes emit: a leading "a *:* rwm" rule
    sets the default; afterwards the *last* matching rule wins, so we test
    the rules from the last one back.
    """
    default = 1
    if rules and rules[0][1].startswith("a "):
        default = 1 if rules[0][0] else 0
        rules = rules[1:]
    code = [
        _ins(0x61, dst=2, src=1, off=0),   # r2 = ctx->access_type
        _ins(0xbf, dst=3, src=2),          # r3 = r2
        _ins(0x57, dst=3, imm=0xFFFF),     # r3 &= 0xffff          (type)
        _ins(0xbf, dst=4, src=2),          # r4 = r2
        _ins(0x77, dst=4, imm=16),         # r4 >>= 16             (access)
        _ins(0x61, dst=5, src=1, off=4),   # r5 = ctx->major
        _ins(0x61, dst=6, src=1, off=8),   # r6 = ctx->minor
    ]
    for allow, rule in reversed(rules):
        kind, major, minor, acc = _parse(rule)
        checks = []
        if kind is not None:
            checks.append([_ins(0x55, dst=3, imm=kind)])               # if r3 != kind: next
        if acc != 7:
            checks.append([_ins(0xbf, dst=0, src=4),                   # r0 = r4
                           _ins(0x57, dst=0, imm=(~acc) & 7),         # r0 &= ~acc
                           _ins(0x55, dst=0, imm=0)])                 # if r0 != 0: next
        if major is not None:
            checks.append([_ins(0x55, dst=5, imm=major)])
        if minor is not None:
            checks.append([_ins(0x55, dst=6, imm=minor)])
        body = [i for c in checks for i in c]
        n = len(body) + 2  # + mov r0, exit
        # patch each conditional jump to land after this rule
        fixed = []
        for pos, ins in enumerate(body):
            if ins[0] == 0x55:
                ins = ins[:2] + (n - pos - 1).to_bytes(2, "little", signed=True) + ins[4:]
            fixed.append(ins)
        code += fixed + [_ins(0xb7, dst=0, imm=1 if allow else 0), _ins(0x95)]
    code += [_ins(0xb7, dst=0, imm=default), _ins(0x95)]
    return b"".join(code)


def _load(code: bytes, log_level: int = 0) -> int:
    """BPF_PROG_LOAD; returns the program's fd (on refusal: again, with the verifier's log)."""
    prog, prog_addr = L.buffer(code)
    lic, lic_addr = L.buffer(b"Apache-2.0\0")
    log, log_addr = L.buffer(bytes(65536))
    attr = ((BPF_PROG_TYPE_CGROUP_DEVICE).to_bytes(4, "little")
            + (len(code) // 8).to_bytes(4, "little")
            + prog_addr.to_bytes(8, "little") + lic_addr.to_bytes(8, "little")
            + log_level.to_bytes(4, "little") + (65536 if log_level else 0).to_bytes(4, "little")
            + (log_addr if log_level else 0).to_bytes(8, "little")
            + bytes(4) + bytes(4)                      # kern_version, prog_flags
            + b"runtime_ref_dev".ljust(16, b"\0")      # prog_name
            + bytes(4)                                 # prog_ifindex
            + BPF_CGROUP_DEVICE.to_bytes(4, "little")  # expected_attach_type
            ).ljust(128, b"\0")
    a, a_addr = L.buffer(attr)
    try:
        return L.bpf(BPF_PROG_LOAD, a_addr, len(attr))
    except OSError as e:
        if log_level:
            raise Error("device filter refused by the kernel: %s: %s"
                        % (e, bytes(log).split(b"\0")[0].decode(errors="replace")[-2000:])) from None
        return _load(code, log_level=1)  # again, to get the verifier's reasons


def attach(cgroup_dir: str, rules: list[tuple[bool, str]]) -> None:
    """Load the program and attach it to ``cgroup_dir`` (it lives as long as the cgroup)."""
    fd = _load(program(rules))
    try:
        cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attr = (cg.to_bytes(4, "little") + fd.to_bytes(4, "little")
                    + BPF_CGROUP_DEVICE.to_bytes(4, "little")
                    + BPF_F_ALLOW_MULTI.to_bytes(4, "little")).ljust(32, b"\0")
            b, b_addr = L.buffer(attr)
            L.bpf(BPF_PROG_ATTACH, b_addr, len(attr))
        finally:
            os.close(cg)
    finally:
        os.close(fd)
