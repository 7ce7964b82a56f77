"""Phase: seccomp — compile ``linux.seccomp`` into a classic BPF program.

The kernel runs the program on every system call with ``struct
seccomp_data`` (nr at offset 0, arch at 4, args at 16 + 8*i) and obeys the
32-bit action it returns.  We check the architecture first (a 32-bit
``int 0x80`` call uses other numbers, and an x32 call sets bit 30 of nr), then
compare nr against each rule in the order the spec gives them, first match
wins, else the default action.  Argument conditions compare the two 32-bit
halves of a 64-bit argument.  No libseccomp: this file is the whole story.
"""
from __future__ import annotations

from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Union

    from .hints import SeccompProgram

    #: a jump target: a label, or an offset already relative
    Target = Union[str, int]
    #: (names, action, argument conditions, where in config.json)
    Rule = tuple[list[str], int, list[dict[str, Any]], str]

AUDIT_ARCH = {"SCMP_ARCH_X86_64": 0xC000003E, "SCMP_ARCH_X86": 0x40000003,
              "SCMP_ARCH_X32": 0xC000003E}
X32_BIT = 0x40000000

RET_KILL_THREAD, RET_KILL_PROCESS = 0x00000000, 0x80000000
RET_TRAP, RET_ERRNO, RET_TRACE = 0x00030000, 0x00050000, 0x7FF00000
RET_LOG, RET_ALLOW = 0x7FFC0000, 0x7FFF0000

FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
         "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}

# BPF opcodes
LD_ABS, JEQ, JGT, JGE, JA, RET, AND = 0x20, 0x15, 0x25, 0x35, 0x05, 0x06, 0x54


def table(arch: str) -> dict[str, int]:
    """{name: number} for "X86_64", "X86" or "X32"."""
    from . import syscalls_x86
    numbers: dict[str, int] = getattr(syscalls_x86, arch)
    return numbers


def action(name: str | None, errno_ret: int | None, where: str) -> int:
    """An SCMP_ACT_* name -> the 32-bit value the filter returns."""
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return RET_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return RET_KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return RET_TRAP
    if name == "SCMP_ACT_ERRNO":
        return RET_ERRNO | ((1 if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return RET_TRACE | ((1 if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_LOG":
        return RET_LOG
    if name == "SCMP_ACT_ALLOW":
        return RET_ALLOW
    raise Error("unsupported config field %s: seccomp action %r" % (where, name))


class _Asm:
    """A list of BPF instructions whose jumps may name labels."""

    def __init__(self) -> None:
        self.code: list[tuple[int, Target, Target, Target]] = []
        self.labels: dict[str, int] = {}
        self.n = 0

    def label(self, name: str) -> None:
        """The next instruction is ``name``."""
        self.labels[name] = len(self.code)

    def op(self, code: int, k: Target = 0, jt: Target = 0, jf: Target = 0) -> None:
        """Append one instruction; k (for JA) and jt/jf may name labels."""
        self.code.append((code, jt, jf, k))

    def fresh(self) -> str:
        """A new label name."""
        self.n += 1
        return "L%d" % self.n

    def _rel(self, target: Target, pos: int, limit: int) -> int:
        """A jump target as the offset from the instruction after ``pos``."""
        t = self.labels[target] - pos - 1 if isinstance(target, str) else target
        if not 0 <= t <= limit:
            raise Error("seccomp filter too large to assemble (jump of %d)" % t)
        return t

    def assemble(self) -> bytes:
        """The program as ``struct sock_filter[]`` bytes: u16 code, u8 jt, u8 jf, u32 k, little-endian
        (one 64-bit integer each: a profile of a few hundred instructions is assembled per container)."""
        words = []
        for pos, (code, jt, jf, k) in enumerate(self.code):
            if code == JA:  # unconditional: k is the target, 32 bits wide
                k, jt, jf = self._rel(k, pos, 0xFFFFFFFF), 0, 0
            elif isinstance(jt, str) or isinstance(jf, str) or not (0 <= jt <= 255 and 0 <= jf <= 255):
                # conditional: jt and jf are the targets, 8 bits each; k is a constant
                jt, jf = self._rel(jt, pos, 255), self._rel(jf, pos, 255)
            words.append(code | jt << 16 | jf << 24 | int(k) << 32)
        if len(self.code) > 4096:
            raise Error("seccomp filter has %d instructions (kernel limit 4096)" % len(self.code))
        return b"".join(w.to_bytes(8, "little") for w in words)


def _arg(asm: _Asm, cond: dict[str, Any], fail: str, where: str) -> None:
    """Emit a check of one argument condition; jump to ``fail`` if it does not hold."""
    idx = cond["index"]
    if not 0 <= idx < 6:
        raise Error("%s: argument index %d out of range" % (where, idx))
    v = cond.get("value", 0) & 0xFFFFFFFFFFFFFFFF
    v2 = cond.get("valueTwo", 0) & 0xFFFFFFFFFFFFFFFF
    op = cond["op"]
    lo_off, hi_off = 16 + 8 * idx, 20 + 8 * idx
    hi, lo = v >> 32, v & 0xFFFFFFFF
    ok = asm.fresh()
    if op == "SCMP_CMP_EQ":
        asm.op(LD_ABS, hi_off)
        asm.op(JEQ, hi, 0, fail)
        asm.op(LD_ABS, lo_off)
        asm.op(JEQ, lo, 0, fail)
    elif op == "SCMP_CMP_NE":
        asm.op(LD_ABS, hi_off)
        asm.op(JEQ, hi, 0, ok)
        asm.op(LD_ABS, lo_off)
        asm.op(JEQ, lo, fail, 0)
    elif op == "SCMP_CMP_MASKED_EQ":
        asm.op(LD_ABS, hi_off)
        asm.op(AND, v >> 32)
        asm.op(JEQ, v2 >> 32, 0, fail)
        asm.op(LD_ABS, lo_off)
        asm.op(AND, v & 0xFFFFFFFF)
        asm.op(JEQ, v2 & 0xFFFFFFFF, 0, fail)
    elif op in ("SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_LT", "SCMP_CMP_LE"):
        # unsigned 64-bit compare: decide on the high word unless equal
        greater = op in ("SCMP_CMP_GT", "SCMP_CMP_GE")
        asm.op(LD_ABS, hi_off)
        asm.op(JGT, hi, ok if greater else fail, 0)
        asm.op(JEQ, hi, 0, fail if greater else ok)
        asm.op(LD_ABS, lo_off)
        if op == "SCMP_CMP_GT":
            asm.op(JGT, lo, 0, fail)
        elif op == "SCMP_CMP_GE":
            asm.op(JGE, lo, 0, fail)
        elif op == "SCMP_CMP_LT":
            asm.op(JGE, lo, fail, 0)
        else:
            asm.op(JGT, lo, fail, 0)
    else:
        raise Error("unsupported config field %s: seccomp operator %r" % (where, op))
    asm.label(ok)


def _rules(asm: _Asm, rules: list[Rule], arch: str, default: int) -> None:
    """nr is in A on entry; emits the rule chain and the default return."""
    nrs = table(arch)
    for names, act, args, where in rules:
        for name in names:
            nr = nrs.get(name)
            if nr is None:
                continue  # exists on another architecture only
            if not args:
                asm.op(JEQ, nr, 0, 1)
                asm.op(RET, act)
                continue
            fail, match = asm.fresh(), asm.fresh()
            asm.op(JEQ, nr, match, 0)
            asm.op(JA, fail)
            asm.label(match)
            for cond in args:
                _arg(asm, cond, fail, where)
            asm.op(RET, act)
            asm.label(fail)
            asm.op(LD_ABS, 0)
    asm.op(RET, default)


def compile(sc: dict[str, Any], ignore_args: bool = False) -> SeccompProgram:
    """linux.seccomp -> (BPF program bytes, seccomp() flags).

    ``ignore_args`` (switch ``seccomp-args``): a rule's argument conditions are
    dropped, so it applies to every call of its system calls (a runtime that
    cannot filter on arguments).
    """
    default = action(sc.get("defaultAction"), sc.get("defaultErrnoRet"), "linux.seccomp.defaultAction")
    arches = set(sc.get("architectures") or ["SCMP_ARCH_X86_64"])
    for a in arches:
        if a not in AUDIT_ARCH:
            raise Error("unsupported config field linux.seccomp.architectures: %s (runtime-ref "
                        "filters x86 only)" % a)
    arches.add("SCMP_ARCH_X86_64")
    t64, t32, tx32 = table("X86_64"), table("X86"), table("X32")
    rules: list[Rule] = []
    for i, r in enumerate(sc.get("syscalls") or []):
        where = "linux.seccomp.syscalls[%d]" % i
        for n in r.get("names") or []:
            if n not in t64 and n not in t32 and n not in tx32:
                raise Error("%s: unknown system call %r" % (where, n))
        rules.append((r.get("names") or [], action(r.get("action"), r.get("errnoRet"), where),
                      [] if ignore_args else r.get("args") or [], where))
    flags = 0
    for f in sc.get("flags") or []:
        if f not in FLAGS:
            raise Error("unsupported config field linux.seccomp.flags: %s" % f)
        flags |= FLAGS[f]

    asm = _Asm()
    bad = RET_KILL_PROCESS
    asm.op(LD_ABS, 4)
    asm.op(JEQ, AUDIT_ARCH["SCMP_ARCH_X86_64"], 1, 0)
    asm.op(JA, "not64")  # long jumps go through JA: jt/jf reach only 255 ahead
    asm.op(LD_ABS, 0)
    asm.op(JGE, X32_BIT, 1, 0)
    asm.op(JA, "x86_64")
    if "SCMP_ARCH_X32" in arches:
        _rules(asm, rules, "X32", default)
    else:
        asm.op(RET, bad)
    asm.label("x86_64")
    _rules(asm, rules, "X86_64", default)
    asm.label("not64")
    if "SCMP_ARCH_X86" in arches:
        asm.op(JEQ, AUDIT_ARCH["SCMP_ARCH_X86"], 1, 0)
        asm.op(RET, bad)
        asm.op(LD_ABS, 0)
        _rules(asm, rules, "X86", default)
    else:
        asm.op(RET, bad)
    return asm.assemble(), flags
