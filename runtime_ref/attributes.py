"""Phase: the process's kernel attributes that are not about privilege.

``process.oomScoreAdj``, ``process.scheduler``, ``process.ioPriority``,
``linux.personality`` and ``linux.memoryPolicy`` for every process of the
container (the init and each ``exec``), ``process.execCPUAffinity`` for
``exec`` alone.  Each field has a ``check`` run by ``create`` (and ``exec``)
before any process exists, so a config the kernel would refuse costs nothing
to clean up and the error names the field, and an ``apply`` that
``process.finish`` calls while the process still has every capability:
lowering oom_score_adj, a negative nice or a real-time policy need
CAP_SYS_RESOURCE, CAP_SYS_NICE, CAP_SYS_ADMIN, which the user and capability
step drops.  All of them are inherited across fork and kept across execve.
Each field has a switch that leaves it alone (the negative controls).
"""
from __future__ import annotations

import os

from . import linux as L
from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .hints import Config, Process, Switches

SYS_ioprio_set = 251
SYS_personality = 135
SYS_set_mempolicy = 238
SYS_sched_setattr = 314

# -- process.scheduler (sched_setattr(2)) ---------------------------------------------------
SCHED_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3, "SCHED_ISO": 4,
                  "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02, "SCHED_FLAG_DL_OVERRUN": 0x04,
               "SCHED_FLAG_KEEP_POLICY": 0x08, "SCHED_FLAG_KEEP_PARAMS": 0x10,
               "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20, "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
#: the kernel's smallest deadline runtime (2^DL_SCALE ns) and the largest (2^63 ns)
_DL_MIN, _DL_MAX = 1 << 10, 1 << 63


def check_scheduler(sched: dict[str, Any] | None) -> None:
    """Refuse what sched_setattr would refuse, naming the field (runc 1.2's validation, and the
    kernel's own __checkparam_dl for SCHED_DEADLINE)."""
    if not sched:
        return
    where = "process.scheduler"
    policy = sched.get("policy")
    if policy not in SCHED_POLICIES:
        raise Error("%s.policy: unknown policy %r (one of %s)" % (where, policy, ", ".join(SCHED_POLICIES)))
    for flag in sched.get("flags") or []:
        if flag not in SCHED_FLAGS:
            raise Error("%s.flags: unknown flag %r" % (where, flag))
    nice, prio = sched.get("nice", 0), sched.get("priority", 0)
    if not -20 <= nice <= 19:
        raise Error("%s.nice: %d is outside -20..19" % (where, nice))
    if nice and policy not in ("SCHED_OTHER", "SCHED_BATCH"):
        raise Error("%s.nice: only SCHED_OTHER and SCHED_BATCH take a nice value, not %s" % (where, policy))
    if prio and policy not in ("SCHED_FIFO", "SCHED_RR"):
        raise Error("%s.priority: only SCHED_FIFO and SCHED_RR take a static priority, not %s" % (where, policy))
    if policy == "SCHED_DEADLINE":
        _check_deadline(sched, where)


def _check_deadline(sched: dict[str, Any], where: str) -> None:
    """SCHED_DEADLINE: 1024 ns <= runtime <= deadline <= period (a period of 0 means the deadline)."""
    runtime, deadline, period = (int(sched.get(k) or 0) for k in ("runtime", "deadline", "period"))
    if not runtime:
        raise Error("%s.runtime: SCHED_DEADLINE needs a runtime" % where)
    if not deadline:
        raise Error("%s.deadline: SCHED_DEADLINE needs a deadline" % where)
    if not _DL_MIN <= runtime < _DL_MAX:
        raise Error("%s.runtime: %d ns is outside the kernel's %d..2^63 ns" % (where, runtime, _DL_MIN))
    if runtime > deadline:
        raise Error("%s: runtime %d is greater than deadline %d" % (where, runtime, deadline))
    if period and deadline > period:
        raise Error("%s: deadline %d is greater than period %d" % (where, deadline, period))


def apply_scheduler(sched: dict[str, Any]) -> None:
    """sched_setattr(0, attr, 0): policy, flags, nice and priority, and the deadline parameters."""
    flags = 0
    for f in sched.get("flags") or []:
        flags |= SCHED_FLAGS[f]
    attr = (48).to_bytes(4, "little") + SCHED_POLICIES[sched["policy"]].to_bytes(4, "little")
    attr += flags.to_bytes(8, "little") + int(sched.get("nice") or 0).to_bytes(4, "little", signed=True)
    attr += int(sched.get("priority") or 0).to_bytes(4, "little")
    for k in ("runtime", "deadline", "period"):
        attr += int(sched.get(k) or 0).to_bytes(8, "little")
    L.syscall(SYS_sched_setattr, 0, attr, 0, what="sched_setattr (process.scheduler)")


# -- process.ioPriority (ioprio_set(2)) -----------------------------------------------------
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_WHO_PROCESS = 1


def check_ioprio(io: dict[str, Any] | None) -> None:
    if not io:
        return
    if io.get("class") not in IOPRIO_CLASSES:
        raise Error("process.ioPriority.class: unknown class %r (one of %s)"
                    % (io.get("class"), ", ".join(IOPRIO_CLASSES)))
    if not 0 <= int(io.get("priority", -1)) <= 7:
        raise Error("process.ioPriority.priority: %r is outside 0..7" % io.get("priority"))


def apply_ioprio(io: dict[str, Any]) -> None:
    """ioprio_set for this process; its children inherit it (the spec: every process of the container)."""
    value = IOPRIO_CLASSES[io["class"]] << 13 | int(io["priority"])
    L.syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value, what="ioprio_set (process.ioPriority)")


# -- linux.personality (personality(2)) -----------------------------------------------------
PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}


def check_personality(pers: dict[str, Any] | None) -> None:
    if not pers:
        return
    if pers.get("domain") not in PERSONALITY_DOMAINS:
        raise Error("linux.personality.domain: unknown domain %r (one of %s)"
                    % (pers.get("domain"), ", ".join(PERSONALITY_DOMAINS)))
    if pers.get("flags"):
        raise Error("linux.personality.flags: no flag is supported (the spec defines none)")


def apply_personality(pers: dict[str, Any]) -> None:
    L.syscall(SYS_personality, PERSONALITY_DOMAINS[pers["domain"]], what="personality (linux.personality)")


# -- linux.memoryPolicy (set_mempolicy(2)) --------------------------------------------------
MPOL_MODES = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3, "MPOL_LOCAL": 4,
              "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6}
MPOL_FLAGS = {"MPOL_F_NUMA_BALANCING": 1 << 13, "MPOL_F_RELATIVE_NODES": 1 << 14,
              "MPOL_F_STATIC_NODES": 1 << 15}
#: modes that take no node, and modes that need at least one (set_mempolicy(2))
_NO_NODES, _NEED_NODES = ("MPOL_DEFAULT", "MPOL_LOCAL"), ("MPOL_BIND", "MPOL_INTERLEAVE",
                                                            "MPOL_PREFERRED_MANY", "MPOL_WEIGHTED_INTERLEAVE")
#: the largest node mask set_mempolicy reads (a page of bits)
_MAX_NODE_BITS = 4096 * 8


def parse_list(text: str, where: str, limit: int) -> list[int]:
    """"0-3,7" -> [0, 1, 2, 3, 7] (cpus or nodes); an error names ``where``."""
    out: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise Error("%s: %r is not a list such as 0-3,7" % (where, text))
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first or last >= limit:
            raise Error("%s: %r names %d, beyond %d" % (where, text, last, limit - 1))
        out.extend(range(first, last + 1))
    return out


def check_mempolicy(pol: dict[str, Any] | None) -> None:
    if pol is None:
        return
    where = "linux.memoryPolicy"
    mode = pol.get("mode")
    if mode not in MPOL_MODES:
        raise Error("%s.mode: %r is not one of %s" % (where, mode, ", ".join(MPOL_MODES)))
    flags = pol.get("flags") or []
    for f in flags:
        if f not in MPOL_FLAGS:
            raise Error("%s.flags: unknown flag %r" % (where, f))
    if "MPOL_F_RELATIVE_NODES" in flags and "MPOL_F_STATIC_NODES" in flags:
        raise Error("%s.flags: MPOL_F_RELATIVE_NODES and MPOL_F_STATIC_NODES exclude each other" % where)
    if "MPOL_F_NUMA_BALANCING" in flags and mode != "MPOL_BIND":
        raise Error("%s.flags: MPOL_F_NUMA_BALANCING goes with MPOL_BIND only, not %s" % (where, mode))
    nodes = pol.get("nodes") or ""
    if nodes:
        if mode in _NO_NODES:
            raise Error("%s.nodes: %s takes no nodes" % (where, mode))
        parse_list(nodes, where + ".nodes", _MAX_NODE_BITS)
    elif mode in _NEED_NODES:
        raise Error("%s.nodes: %s needs at least one node" % (where, mode))


def apply_mempolicy(pol: dict[str, Any]) -> None:
    """set_mempolicy(mode | flags, nodemask, maxnode): kept across execve, inherited by children."""
    mode = MPOL_MODES[pol["mode"]]
    for f in pol.get("flags") or []:
        mode |= MPOL_FLAGS[f]
    nodes = parse_list(pol["nodes"], "linux.memoryPolicy.nodes", _MAX_NODE_BITS) if pol.get("nodes") else []
    bits = max(nodes, default=-1) + 1
    mask = sum(1 << n for n in nodes).to_bytes(max(8, (bits + 63) // 64 * 8), "little")
    # maxnode: the kernel reads maxnode - 1 bits (a historical off-by-one every caller adds back)
    L.syscall(SYS_set_mempolicy, mode, mask if nodes else 0, bits + 1 if nodes else 0,
              what="set_mempolicy (linux.memoryPolicy)")


# -- process.execCPUAffinity (exec only) ----------------------------------------------------
def check_exec_affinity(aff: dict[str, Any] | None) -> None:
    for key in ("initial", "final"):
        if aff and aff.get(key):
            parse_list(aff[key], "process.execCPUAffinity." + key, os.cpu_count() or 1)


def set_affinity(cpus: str | None, where: str) -> None:
    """sched_setaffinity(0, cpus); nothing for an empty or missing list (the spec: leave it)."""
    if cpus:
        os.sched_setaffinity(0, parse_list(cpus, where, os.cpu_count() or 1))


# -- the phase ----------------------------------------------------------------------------
def check(config: Config, proc: Process, disabled: Switches) -> None:
    """Every attribute of ``proc`` (the init's, or an exec'd process's) and of ``config``; a field
    whose switch is off is neither checked nor applied (a runtime that ignores it)."""
    linux = config.get("linux") or {}
    oom = proc.get("oomScoreAdj")
    if oom is not None and not -1000 <= oom <= 1000 and "oom-score-adj" not in disabled:
        raise Error("process.oomScoreAdj: %d is outside -1000..1000" % oom)
    if "scheduler" not in disabled:
        check_scheduler(proc.get("scheduler"))
    if "ioprio" not in disabled:
        check_ioprio(proc.get("ioPriority"))
    if "personality" not in disabled:
        check_personality(linux.get("personality"))
    if "mempolicy" not in disabled:
        check_mempolicy(linux.get("memoryPolicy"))
    if "cpu-affinity" not in disabled:
        check_exec_affinity(proc.get("execCPUAffinity"))


def apply(proc: Process, linux: dict[str, Any], disabled: Switches) -> None:
    """Set every configured attribute on this process (still privileged: see the module doc)."""
    if proc.get("oomScoreAdj") is not None and "oom-score-adj" not in disabled:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(proc["oomScoreAdj"]))
    if proc.get("scheduler") and "scheduler" not in disabled:
        apply_scheduler(proc["scheduler"])
    if proc.get("ioPriority") and "ioprio" not in disabled:
        apply_ioprio(proc["ioPriority"])
    if linux.get("personality") and "personality" not in disabled:
        apply_personality(linux["personality"])
    if linux.get("memoryPolicy") is not None and "mempolicy" not in disabled:
        apply_mempolicy(linux["memoryPolicy"])
