"""Command line: runc's verbs and flags, parsed by hand.

argparse alone costs several milliseconds of start-up, and every container
start pays for it; the grammar here is small enough to read at once.  Every
flag of every verb is listed below, and anything else is refused with runc's
words and exit status ("flag provided but not defined", 1; an unknown verb,
3): scripts and engines call this command line, and a typo they make must
not pass as a success.  A flag listed here is either honoured or refused by
name (``_REFUSED``); none is accepted and ignored.
"""
from __future__ import annotations

import os
import sys

from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, FrozenSet, List, Tuple

    from .hints import Launch

    #: flag -> every value given (a boolean flag's are "true": only its presence counts)
    Flags = Dict[str, List[str]]

VERSION = "0.1.0"
SPEC_VERSION = "1.0.2"
DEFAULT_ROOT = "/run/runtime-ref"

USAGE = """usage: runtime-ref [--root DIR] [--log FILE] [--log-format text|json] [--debug]
                   [--disable SWITCH,...] VERB ...

verbs:
  spec [--bundle B] [--rootless]         write a starter config.json
  create [--bundle B] [--pid-file F] [--preserve-fds N] [--console-socket S] [--no-pivot] ID
                                         build the container; its init waits for start
  start ID                               let the init exec the process
  state ID                               print the runtime-spec state JSON
  kill [--all] ID [SIGNAL]               signal the init (default TERM)
  delete [--force] ID                    remove a stopped container (--force: kill first)
  run [--bundle B] [--pid-file F] [--preserve-fds N] [--detach [--console-socket S]] [--keep] ID
                                         create + start + wait + delete; exit with its status
  exec [--env K=V] [--cwd D] [--user U[:G]] [--additional-gids G] [--cap C] [--detach] [--pid-file F]
       [--process P] [--preserve-fds N] [--no-new-privs] [--ignore-paused] ID CMD...
  pause ID / resume ID                   freeze / thaw every process of the container
  ps [--format table|json] ID            the container's processes (host pids)
  update [--memory N] [--memory-swap N] [--memory-reservation N] [--pids-limit N]
         [--cpu-quota N] [--cpu-period N] [--cpu-share N] [--cpuset-cpus L] [--cpuset-mems L]
         [--blkio-weight N] [--resources FILE|-] ID
                                         change the limits of a running container
  list [-q] [--format table|json]        containers under --root
  features                               what this runtime supports (JSON)

switches (--disable, or $RUNTIME_REF_DISABLE): negative controls, one primitive off each;
  see `runtime-ref features` ("switches").
"""

_E: FrozenSet[str] = frozenset()
_CREATE = frozenset({"--bundle", "--pid-file", "--console-socket", "--preserve-fds"})
_UPDATE = frozenset({"--resources", "--memory", "--memory-swap", "--memory-reservation", "--pids-limit",
                     "--cpu-quota", "--cpu-period", "--cpu-share", "--cpuset-cpus", "--cpuset-mems",
                     "--blkio-weight", "--kernel-memory", "--kernel-memory-tcp", "--cpu-rt-period",
                     "--cpu-rt-runtime", "--l3-cache-schema", "--mem-bw-schema"})

#: verb ("" = the global flags) -> (flags that take a value, flags that do not): runc 1.1's
_FLAGS: Dict[str, Tuple[FrozenSet[str], FrozenSet[str]]] = {
    "": (frozenset({"--root", "--log", "--log-format", "--disable", "--criu", "--rootless"}),
         frozenset({"--debug", "--systemd-cgroup"})),
    "spec": (frozenset({"--bundle"}), frozenset({"--rootless"})),
    "create": (_CREATE, frozenset({"--no-pivot", "--no-new-keyring"})),
    "run": (_CREATE, frozenset({"--no-pivot", "--no-new-keyring", "--detach", "--keep"})),
    "exec": (frozenset({"--env", "--cwd", "--user", "--pid-file", "--process", "--console-socket", "--cap",
                        "--preserve-fds", "--apparmor", "--process-label", "--additional-gids", "--cgroup"}),
             frozenset({"--detach", "--tty", "--no-new-privs", "--ignore-paused"})),
    "start": (_E, _E), "state": (_E, _E), "pause": (_E, _E), "resume": (_E, _E), "features": (_E, _E),
    "kill": (_E, frozenset({"--all"})),
    "delete": (_E, frozenset({"--force"})),
    "list": (frozenset({"--format"}), frozenset({"--quiet"})),
    "ps": (frozenset({"--format"}), _E),
    "update": (_UPDATE, _E),
}
#: short spellings, per verb where one letter means different things (-f)
_ALIASES = {"-b": "--bundle", "-e": "--env", "-u": "--user", "-p": "--process", "-c": "--cap",
            "-d": "--detach", "-a": "--all", "-q": "--quiet", "-t": "--tty", "-g": "--additional-gids",
            "-r": "--resources"}
_VERB_ALIASES = {"delete": {"-f": "--force"}, "list": {"-f": "--format"}, "ps": {"-f": "--format"}}

#: flags runc has that runtime-ref does not implement: refused by name rather than ignored
_REFUSED = {
    "--tty": "no terminal (stdio is inherited)",
    "--cgroup": "exec --cgroup (a sub-cgroup) is not implemented",
    "--systemd-cgroup": "no systemd cgroup driver",
    "--kernel-memory": "kernel memory limits are gone from Linux 6.x",
    "--kernel-memory-tcp": "kernel TCP memory limits are not implemented",
    "--cpu-rt-period": "realtime cpu limits are not implemented",
    "--cpu-rt-runtime": "realtime cpu limits are not implemented",
    "--l3-cache-schema": "no Intel RDT", "--mem-bw-schema": "no Intel RDT",
}

#: allowed values of flags that take one from a list
_CHOICES = {"--log-format": ("text", "json"), "--format": ("table", "json"),
            "--rootless": ("true", "false", "auto")}


def parse(argv: list[str], verb: str, strict: bool = True) -> tuple[Flags, list[str]]:
    """Split argv into ({flag: [values]}, positionals); flags stop at the first positional
    for exec (the command's own flags are not ours).

    ``strict`` (always, but for the ``cli-checks`` control): an unknown flag is an error.
    """
    valued, boolean = _FLAGS.get(verb, (_E, _E))
    aliases = {**_ALIASES, **_VERB_ALIASES.get(verb, {})}
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
            key = aliases.get(name, name)
            if key in valued:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise Error("flag needs an argument: %s" % name)
                    val = argv[i]
                opts.setdefault(key, []).append(val)
            elif key in boolean or key in ("--help", "-h") or not strict:
                if eq and strict and val not in ("true", "false"):
                    raise Error("invalid boolean value %r for %s" % (val, name))
                if val != "false":
                    opts.setdefault(key, []).append("true")
            else:
                raise Error("flag provided but not defined: %s" % name)
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


def _count(opts: Flags, name: str) -> int:
    """A non-negative integer flag (--preserve-fds), 0 when absent."""
    v = _last(opts, name)
    if v is None:
        return 0
    if not v.isdigit():
        raise Error("invalid value %r for %s: a non-negative integer" % (v, name))
    return int(v)


def _check_choices(opts: Flags) -> None:
    """A flag with a closed set of values must have one of them (runc: "invalid log-format")."""
    for name, allowed in _CHOICES.items():
        for v in opts.get(name, []):
            if v not in allowed:
                raise Error("invalid value %r for %s (one of: %s)" % (v, name, ", ".join(allowed)))


def _refuse(opts: Flags) -> None:
    for n in opts:
        if n in _REFUSED:
            raise Error("flag %s is not supported by runtime-ref: %s" % (n, _REFUSED[n]))


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


def _passed_fds(opts: Flags, strict: bool, disabled: set[str]) -> int:
    """How many descriptors from 3 on the container gets: systemd's LISTEN_FDS, then --preserve-fds.

    As runc: LISTEN_FDS counts only when LISTEN_PID names this very process
    (socket activation handed *us* those sockets).  Each one must be open:
    passing on a number the caller never gave would hand over one of ours.
    """
    n = _listen_fds() + _count(opts, "--preserve-fds")
    if "preserve-fds" in disabled:  # the control: --preserve-fds is dropped on the floor
        n = _listen_fds()
    for fd in range(3, 3 + n) if strict else ():
        try:
            os.fstat(fd)
        except OSError:
            raise Error("--preserve-fds/LISTEN_FDS: descriptor %d was not passed to runtime-ref" % fd) from None
    return n


def _listen_fds() -> int:
    fds, pid = os.environ.get("LISTEN_FDS", ""), os.environ.get("LISTEN_PID", "")
    return int(fds) if fds.isdigit() and pid == str(os.getpid()) else 0


def dispatch(g: Flags, verb: str, argv: list[str], disabled: set[str]) -> int:
    """Run one verb; returns the exit code."""
    strict = "cli-checks" not in disabled
    root = _one(g, "--root", DEFAULT_ROOT)
    if "cwd-check" in disabled:
        from .spawn import reserve_leaky_fd
        reserve_leaky_fd()  # before any thread or pipe can take that number
    if verb not in _FLAGS:
        if not strict:
            return 0  # switch cli-checks: an unknown verb "succeeds"
        raise Error("unknown verb %r (see runtime-ref --help)" % verb, status=3)
    opts, pos = parse(argv, verb, strict)
    if "--help" in opts or "-h" in opts:
        sys.stdout.write(USAGE)
        return 0
    if strict:
        _check_choices(opts)
        _refuse(opts)
    if not strict and verb not in ("list", "features", "spec") and (not pos or (
            verb not in ("create", "run", "state") and not os.path.isfile(os.path.join(root, pos[0], "state.json")))):
        return 0  # switch cli-checks: a verb without its container id, or with an unknown one, "succeeds"
    if verb in ("create", "run"):
        if "--no-pivot" in opts:
            disabled.add("pivot_root")
        cid = _need_id(pos, verb)
        if "id-check" not in disabled:
            from .state import check_id_chars
            check_id_chars(cid)
        from . import container
        launch: Launch = {"pass_fds": _passed_fds(opts, strict, disabled), "listen_fds": _listen_fds(),
                          "console_socket": _last(opts, "--console-socket"),
                          "detach": verb == "create" or "--detach" in opts}
        if verb == "create":
            container.create(root, cid, _one(opts, "--bundle", "."), disabled, _last(opts, "--pid-file"),
                             fifo="exec-fifo" not in disabled, launch=launch)
            return 0
        return container.run(root, cid, _one(opts, "--bundle", "."), disabled, _last(opts, "--pid-file"),
                             detach="--detach" in opts, keep="--keep" in opts, launch=launch)
    if verb in ("start", "pause", "resume"):
        from . import container, freeze
        cid = _need_id(pos, verb)
        if verb == "start":
            container.start(root, cid, disabled)
        elif verb == "pause":
            freeze.pause(root, cid, disabled)
        else:
            freeze.resume(root, cid, disabled)
        return 0
    if verb == "state":
        return _state(root, _need_id(pos, verb), disabled)
    if verb == "kill":
        cid = _need_id(pos, verb, extra=1)
        from . import container
        try:
            sig = _parse_signal(pos[1] if len(pos) > 1 else "TERM")
        except Error:
            if strict:
                raise
            return 0  # switch cli-checks: an unknown signal "succeeds"
        container.kill(root, cid, sig, "--all" in opts, disabled)
        return 0
    if verb == "delete":
        from . import container
        container.delete(root, _need_id(pos, verb), force="--force" in opts, disabled=disabled)
        return 0
    if verb == "exec":
        return _exec(root, opts, pos, strict, disabled)
    if verb == "ps":
        from .ps import ps
        return ps(root, _need_id(pos, verb), _one(opts, "--format", "table"), disabled)
    if verb == "update":
        from .update import update
        update(root, _need_id(pos, verb), opts, disabled)
        return 0
    if verb == "list":
        return _list(root, opts)
    if verb == "spec":
        return _spec(opts)
    from .features import features
    from .jsonfast import dumps
    sys.stdout.write(dumps(features() if "features" not in disabled else {}, 4) + "\n")
    return 0


def _state(root: str, cid: str, disabled: set[str]) -> int:
    from .jsonfast import dumps
    from .state import OCI_VERSION, Container
    try:
        state = Container.load(root, cid).oci_state()
    except Error:
        if "cli-checks" not in disabled and "state" not in disabled:
            raise
        # switches cli-checks and state: an id nobody created is answered (stopped; state: created)
        state = {"ociVersion": OCI_VERSION, "id": cid, "status": "stopped", "pid": 0, "bundle": "",
                 "annotations": {}}
    if "state" in disabled:
        state["status"] = "created"  # switch "state": the store never moves past create
    if "state-fields" in disabled:
        state = {"status": state["status"], "pid": state["pid"]}
    sys.stdout.write(dumps(state, 2) + "\n")
    return 0


def _exec(root: str, opts: Flags, pos: list[str], strict: bool, disabled: set[str]) -> int:
    """``exec``; switch ``exec-status``: it says 0 whatever happened (the process's status, its own failure)."""
    blind = "exec-status" in disabled | _container_switches(root, pos)
    try:
        status = _exec_verb(root, opts, pos, strict)
    except Error:
        if not blind:
            raise
        return 0
    return 0 if blind else status


def _container_switches(root: str, pos: list[str]) -> set[str]:
    """The switches the container was created with (exec follows them, as every verb of it does)."""
    from .state import Container
    try:
        return set(Container.load(root, pos[0]).data.get("disabled") or []) if pos else set()
    except Error:
        return set()


def _exec_verb(root: str, opts: Flags, pos: list[str], strict: bool) -> int:
    if not pos:
        raise Error('"exec" requires a container id')
    if "--console-socket" in opts:
        raise Error("flag --console-socket is not supported by runtime-ref for exec: no terminal for an "
                    "exec'd process (exec --tty is refused too)")
    from .exec import exec_process
    gids = [g for v in opts.get("--additional-gids", []) for g in v.split(",") if g]
    if not all(g.isdigit() for g in gids):
        raise Error("invalid value for --additional-gids: %s (numeric gids)" % ",".join(gids))
    return exec_process(root, pos[0], pos[1:], {
        "env": opts.get("--env"), "cwd": _last(opts, "--cwd"), "user": _last(opts, "--user"),
        "detach": "--detach" in opts, "pid_file": _last(opts, "--pid-file"),
        "process": _last(opts, "--process"), "pass_fds": _passed_fds_exec(opts, strict),
        "no_new_privs": "--no-new-privs" in opts, "ignore_paused": "--ignore-paused" in opts,
        "additional_gids": [int(g) for g in gids] or None, "cap": opts.get("--cap"),
        "apparmor": _last(opts, "--apparmor"), "process_label": _last(opts, "--process-label")})


def _passed_fds_exec(opts: Flags, strict: bool) -> int:
    """exec's --preserve-fds (runc passes no LISTEN_FDS to exec)."""
    n = _count(opts, "--preserve-fds")
    for fd in range(3, 3 + n) if strict else ():
        try:
            os.fstat(fd)
        except OSError:
            raise Error("--preserve-fds: descriptor %d was not passed to runtime-ref" % fd) from None
    return n


def _spec(opts: Flags) -> int:
    from . import spec
    from .jsonfast import dumps
    path = os.path.join(_one(opts, "--bundle", "."), "config.json")
    if os.path.exists(path):
        raise Error("File %s exists. Remove it first" % path)
    config = spec.default_spec()
    if "--rootless" in opts:
        config = spec.rootless(config, os.geteuid(), os.getegid())
    with open(path, "w") as f:
        f.write(dumps(config, 2) + "\n")
    return 0


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


def _log(g: Flags, level: str, msg: str, disabled: set[str] | frozenset[str] = frozenset()) -> None:
    """One line in --log (text or json, as --log-format says; switch log-format: text); nothing
    without --log."""
    path = _last(g, "--log")
    if not path:
        return
    try:
        import time
        with open(path, "a") as f:
            if _one(g, "--log-format", "text") == "json" and "log-format" not in disabled:
                from .jsonfast import dumps
                f.write(dumps({"level": level, "msg": msg,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
            else:
                f.write("level=%s msg=%s\n" % (level, msg))
    except OSError:
        pass


def _global_flags(argv: list[str]) -> tuple[Flags, list[str], list[str]]:
    """Split off the global flags: ({flag: [values]}, the unknown ones, the verb and its argv)."""
    g: Flags = {}
    unknown: list[str] = []
    rest = list(argv)
    valued, boolean = _FLAGS[""]
    while rest and rest[0].startswith("-"):
        a = rest.pop(0)
        name, eq, val = a.partition("=")
        if name in valued:
            if not eq:
                if not rest:
                    raise Error("flag needs an argument: %s" % name)
                val = rest.pop(0)
            g.setdefault(name, []).append(val)
        elif name in boolean or name in ("--version", "-v", "--help", "-h"):
            g.setdefault(name, []).append("true")
        else:
            unknown.append(name)
    return g, unknown, rest


def _check_globals(g: Flags, unknown: list[str]) -> None:
    """Refuse what runc refuses before any verb runs: an unknown flag, a bad value, an unusable --log."""
    if unknown:
        raise Error("flag provided but not defined: %s" % unknown[0])
    _check_choices(g)
    _refuse(g)
    if "true" in g.get("--rootless", []):
        raise Error("--rootless=true is not supported: runtime-ref runs as root (false and auto are)")
    path = _last(g, "--log")
    if path:  # as runc, the log is opened before anything else: a path we cannot write is an error
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as e:
            raise Error("cannot open log file %s: %s" % (path, e.strerror)) from None


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (errors: one line on stderr, status 1 or runc's)."""
    argv = sys.argv[1:] if argv is None else argv
    g: Flags = {}
    disabled: set[str] = set()
    try:
        g, unknown, rest = _global_flags(argv)
        if "--version" in g or "-v" in g:
            sys.stdout.write("runtime-ref version %s\nspec: %s\n" % (VERSION, SPEC_VERSION))
            return 0
        if "--help" in g or "-h" in g:
            sys.stdout.write(USAGE)
            return 0
        from . import spec
        disabled = spec.parse_switches(g.get("--disable", []))
        if "cli-checks" not in disabled:
            _check_globals(g, unknown)
        if not rest:
            sys.stderr.write(USAGE)
            return 2
        if "--debug" in g:
            _log(g, "debug", "runtime-ref %s" % " ".join(rest), disabled)
        return dispatch(g, rest[0], rest[1:], disabled)
    except Error as e:
        msg, status = str(e), e.status
    except KeyboardInterrupt:
        return 130
    sys.stderr.write("runtime-ref: %s\n" % msg)
    _log(g, "error", msg, disabled)
    return status
