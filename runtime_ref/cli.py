"""Command line: runc's verbs and flags, parsed by hand.

argparse alone costs several milliseconds of start-up, and every container
start pays for it; the grammar here is small enough to read at once.
"""
from __future__ import annotations

import os
import sys

from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List

    #: flag -> every value given (a boolean flag's are "true": only its presence counts)
    Flags = Dict[str, List[str]]

VERSION = "0.1.0"
SPEC_VERSION = "1.0.2"
DEFAULT_ROOT = "/run/runtime-ref"

USAGE = """usage: runtime-ref [--root DIR] [--log FILE] [--log-format text|json] [--disable SWITCH,...] VERB ...

verbs:
  spec [--bundle B]                      write a starter config.json
  create [--bundle B] [--pid-file F] ID  build the container; its init waits for start
  start ID                               let the init exec the process
  state ID                               print the runtime-spec state JSON
  kill [--all] ID [SIGNAL]               signal the init (default TERM)
  delete [--force] ID                    remove a stopped container (--force: kill first)
  run [--bundle B] [--pid-file F] [--detach] ID
                                         create + start + wait + delete; exit with its status
  exec [--env K=V] [--cwd D] [--user U[:G]] [--detach] [--pid-file F] [--process P] ID CMD...
  list [-q] [--format table|json]        containers under --root
  features                               what this runtime supports (JSON)

switches (--disable, or $RUNTIME_REF_DISABLE): negative controls, one primitive off each;
  see `runtime-ref features` ("switches").
"""

# flags that take a value, per verb ("" = global); everything else is boolean
_VALUED = {
    "": {"--root", "--log", "--log-format", "--disable", "--criu"},
    "spec": {"--bundle", "-b"},
    "create": {"--bundle", "-b", "--pid-file", "--console-socket", "--preserve-fds"},
    "run": {"--bundle", "-b", "--pid-file", "--console-socket", "--preserve-fds"},
    "exec": {"--env", "-e", "--cwd", "--user", "-u", "--pid-file", "--process", "-p",
             "--console-socket", "--cap", "-c", "--preserve-fds", "--apparmor",
             "--process-label", "--additional-gids", "-g", "--cgroup"},
    "kill": set(), "delete": set(), "start": set(), "state": set(),
    "list": {"--format", "-f"}, "features": set(),
}
_ALIASES = {"-b": "--bundle", "-e": "--env", "-u": "--user", "-p": "--process", "-c": "--cap",
            "-d": "--detach", "-f": "--force", "-a": "--all", "-q": "--quiet", "-t": "--tty",
            "-g": "--additional-gids"}


def parse(argv: list[str], verb: str) -> tuple[Flags, list[str]]:
    """Split argv into ({flag: [values]}, positionals); flags stop at the first positional
    for exec (the command's own flags are not ours)."""
    valued = _VALUED.get(verb, set())
    opts: Flags = {}
    pos: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            pos.extend(argv[i + 1:])
            break
        if a.startswith("-") and a != "-" and not (verb == "exec" and pos):
            name, eq, val = a.partition("=")
            if verb == "list" and name == "-f":
                name = "--format"
            key = _ALIASES.get(name, name)
            if name in valued or key in valued:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise Error("flag %s needs a value" % name)
                    val = argv[i]
                opts.setdefault(key, []).append(val)
            else:
                if eq:
                    raise Error("flag %s takes no value" % name)
                opts.setdefault(key, []).append("true")
            i += 1
            continue
        pos.append(a)
        if verb == "exec" and len(pos) >= 1:
            pos.extend(argv[i + 1:])
            break
        i += 1
    return opts, pos


def _last(opts: Flags, name: str) -> str | None:
    """The last value given to a valued flag, or None."""
    v = opts.get(name)
    return v[-1] if v else None


def _one(opts: Flags, name: str, default: str) -> str:
    """The last value given to a valued flag, or ``default``."""
    v = opts.get(name)
    return v[-1] if v else default


def _need_id(pos: list[str], verb: str, extra: int = 0) -> str:
    if len(pos) < 1:
        raise Error('"%s" requires a container id' % verb)
    if len(pos) > 1 + extra:
        raise Error('"%s": unexpected arguments %s' % (verb, " ".join(pos[1 + extra:])))
    return pos[0]


SIGNALS = {name: i + 1 for i, name in enumerate(
    "HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CONT "
    "STOP TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS".split())}
SIGNALS.update(IOT=6, POLL=29, CLD=17)


def _parse_signal(s: str) -> int:
    """KILL, SIGKILL, kill or 9 -> 9 (Linux x86 numbering, as runc accepts)."""
    if s.isdigit():
        return int(s)
    name = s.upper()
    name = name[3:] if name.startswith("SIG") else name
    if name.startswith("RTMIN") or name.startswith("RTMAX"):
        off = int(name[6:] or 0) if len(name) > 5 else 0
        return 34 + off if name.startswith("RTMIN") else 64 - off
    if name not in SIGNALS:
        raise Error("unknown signal %r" % s)
    return SIGNALS[name]


def _refuse(opts: Flags, *names: str) -> None:
    for n in names:
        if n in opts:
            raise Error("flag %s is not supported by runtime-ref" % n)


def dispatch(g: Flags, verb: str, argv: list[str]) -> int:
    """Run one verb; returns the exit code."""
    from . import spec
    root = _one(g, "--root", DEFAULT_ROOT)
    disabled = spec.parse_switches(g.get("--disable", []))
    if "cwd-check" in disabled:
        from .spawn import reserve_leaky_fd
        reserve_leaky_fd()  # before any thread or pipe can take that number
    opts, pos = parse(argv, verb)
    if "--help" in opts or "-h" in opts:
        sys.stdout.write(USAGE)
        return 0
    if verb in ("create", "run"):
        _refuse(opts, "--console-socket", "--tty")
        if "--no-pivot" in opts:
            disabled.add("pivot_root")
        cid = _need_id(pos, verb)
        from . import container
        if verb == "create":
            container.create(root, cid, _one(opts, "--bundle", "."), disabled, _last(opts, "--pid-file"),
                             fifo="exec-fifo" not in disabled)
            return 0
        return container.run(root, cid, _one(opts, "--bundle", "."), disabled,
                             _last(opts, "--pid-file"), detach="--detach" in opts)
    if verb == "start":
        from . import container
        container.start(root, _need_id(pos, verb))
        return 0
    if verb == "state":
        from .jsonfast import dumps
        from .state import OCI_VERSION, Container
        cid = _need_id(pos, verb)
        try:
            answer = Container.load(root, cid).oci_state()
        except Error:
            if "state" not in disabled:
                raise
            answer = {"ociVersion": OCI_VERSION, "id": cid, "pid": 0, "bundle": "", "annotations": {}}
        if "state" in disabled:
            answer["status"] = "created"  # switch "state": the store never moves past create
        sys.stdout.write(dumps(answer, 2) + "\n")
        return 0
    if verb == "kill":
        cid = _need_id(pos, verb, extra=1)
        from . import container
        container.kill(root, cid, _parse_signal(pos[1] if len(pos) > 1 else "TERM"), "--all" in opts,
                       disabled)
        return 0
    if verb == "delete":
        from . import container
        container.delete(root, _need_id(pos, verb), force="--force" in opts)
        return 0
    if verb == "exec":
        _refuse(opts, "--console-socket", "--tty", "--cap", "--apparmor", "--process-label",
                "--additional-gids", "--preserve-fds", "--cgroup")
        if not pos:
            raise Error('"exec" requires a container id')
        from .exec import exec_process
        return exec_process(root, pos[0], pos[1:], {
            "env": opts.get("--env"), "cwd": _last(opts, "--cwd"), "user": _last(opts, "--user"),
            "detach": "--detach" in opts, "pid_file": _last(opts, "--pid-file"),
            "process": _last(opts, "--process")})
    if verb == "list":
        return _list(root, opts)
    if verb == "spec":
        from .jsonfast import dumps
        path = os.path.join(_one(opts, "--bundle", "."), "config.json")
        if os.path.exists(path):
            raise Error("File %s exists. Remove it first" % path)
        with open(path, "w") as f:
            f.write(dumps(spec.default_spec(), 2) + "\n")
        return 0
    if verb == "features":
        from .features import features
        from .jsonfast import dumps
        sys.stdout.write(dumps(features(), 4) + "\n")
        return 0
    raise Error("unknown verb %r (see runtime-ref --help)" % verb)


def _list(root: str, opts: Flags) -> int:
    from .state import Container, list_ids
    ids = list_ids(root)
    if "--quiet" in opts:
        sys.stdout.write("".join(i + "\n" for i in ids))
        return 0
    rows = []
    for cid in ids:
        try:
            rows.append(Container.load(root, cid).oci_state())
        except Error:
            continue
    if _one(opts, "--format", "table") == "json":
        from .jsonfast import dumps
        sys.stdout.write(dumps(rows) + "\n")
        return 0
    out = ["%-20s %-8s %-10s %s" % ("ID", "PID", "STATUS", "BUNDLE")]
    out += ["%-20s %-8d %-10s %s" % (r["id"], r["pid"], r["status"], r["bundle"]) for r in rows]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _log(g: Flags, msg: str) -> None:
    path = _last(g, "--log")
    if not path:
        return
    try:
        import time
        with open(path, "a") as f:
            if _one(g, "--log-format", "text") == "json":
                from .jsonfast import dumps
                f.write(dumps({"level": "error", "msg": msg,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
            else:
                f.write("level=error msg=%s\n" % msg)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (errors: one line on stderr, status 1)."""
    argv = sys.argv[1:] if argv is None else argv
    g: Flags = {}
    try:
        rest = list(argv)
        while rest and rest[0].startswith("-"):
            a = rest.pop(0)
            name, eq, val = a.partition("=")
            if name in ("--version", "-v"):
                sys.stdout.write("runtime-ref version %s\nspec: %s\n" % (VERSION, SPEC_VERSION))
                return 0
            if name in ("--help", "-h"):
                sys.stdout.write(USAGE)
                return 0
            if name in _VALUED[""]:
                if not eq:
                    if not rest:
                        raise Error("flag %s needs a value" % name)
                    val = rest.pop(0)
                g.setdefault(name, []).append(val)
            elif name in ("--debug", "--systemd-cgroup", "--rootless"):
                if name == "--systemd-cgroup":
                    raise Error("--systemd-cgroup is not supported by runtime-ref")
            else:
                raise Error("unknown global flag %s" % name)
        if not rest:
            sys.stderr.write(USAGE)
            return 2
        return dispatch(g, rest[0], rest[1:])
    except Error as e:
        msg = str(e)
    except KeyboardInterrupt:
        return 130
    sys.stderr.write("runtime-ref: %s\n" % msg)
    _log(g, msg)
    return 1
