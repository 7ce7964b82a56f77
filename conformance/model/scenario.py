"""The validated scenario: a typed view of one YAML document.

Everything downstream (bundle builder, driver, judge) works on these objects,
never on raw dicts, so a misspelt key can only ever fail in the loader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Tuple, Union

from .errors import ScenarioError
from .image_spec import ImageError, ImageSpec

DEFAULT_TIMEOUT_S = 20.0

#: Host facts whose natural moment to be read is after the entrypoint ended.
_EXITED_BY_DEFAULT = ("cgroup", "layer_file", "host_unchanged", "runtime_binary_unchanged")

#: Every kind of host fact (the schema's ``host_fact`` alternatives, in the order a fact's kind is recognised).
FACT_KINDS = ("namespace_differs", "proc", "cgroup", "host_file", "host_hostname_unchanged", "layer_file",
              "host_unchanged", "mounts_declared", "runtime_binary_unchanged", "host_stat", "cgroup_view", "tasks")
#: Kinds that judge themselves (the fact is one expectation, it takes no matchers).
SELF_JUDGED = ("namespace_differs", "host_hostname_unchanged", "host_unchanged", "mounts_declared",
               "runtime_binary_unchanged")
#: Facts read from the container's host process (/proc/<pid>: its status, links, mount table; the tasks of
#: its cgroup): for a sandboxed runtime they describe the sandbox, not the container (judge/verdict.py
#: does not judge them there).
PROCESS_FACTS = ("proc", "mounts_declared", "cgroup_view", "tasks")
#: What the harness can hand a runtime process as an open descriptor (``launch.fds``).
HANDED_FDS = ("file", "socket", "pipe")


#: where a value sits in a YAML document: its keys and list indexes from the top (for line numbers)
LinePath = Tuple[Union[str, int], ...]


def _strings(value: str | list[str] | None) -> tuple[str, ...]:
    """One string or a list of them, as a tuple."""
    return (value,) if isinstance(value, str) else tuple(value or ())


@dataclass(frozen=True)
class TextExpectation:
    """Matchers over one text (stdout, stderr, a /proc value, a cgroup file)."""

    equals: str | None = None
    contains: tuple[str, ...] = ()
    not_contains: tuple[str, ...] = ()
    matches: str | None = None
    not_matches: str | None = None
    at_least: float | None = None
    at_most: float | None = None

    @classmethod
    def from_yaml(cls, raw: Any) -> "TextExpectation":
        if isinstance(raw, str):
            return cls(equals=raw)
        return cls(equals=raw.get("equals"), contains=_strings(raw.get("contains")),
                   not_contains=_strings(raw.get("not_contains")), matches=raw.get("matches"),
                   not_matches=raw.get("not_matches"), at_least=raw.get("at_least"),
                   at_most=raw.get("at_most"))


@dataclass(frozen=True)
class HostFact:
    """One observation made from the host: what to read, when, and how to judge it."""

    kind: str                 # one of FACT_KINDS
    target: str               # the namespace, /proc file, cgroup value, host path, image path, or what stays unchanged
    when: str                 # created | running | exited
    field: str | None = None  # for proc: the "Field:" line to read
    expect: TextExpectation = TextExpectation()
    layer: str | None = None  # for layer_file: a layer number (1 = the lowest), upper or image

    @classmethod
    def from_yaml(cls, raw: dict[str, Any]) -> "HostFact":
        kind = next(k for k in FACT_KINDS if k in raw)
        matchers = {k: v for k, v in raw.items() if k not in (kind, "when", "field", "layer")}
        when = raw.get("when") or ("exited" if kind in _EXITED_BY_DEFAULT else "running")
        return cls(kind=kind, target=str(raw[kind]), when=when, field=raw.get("field"),
                   expect=TextExpectation.from_yaml(matchers) if matchers else TextExpectation(),
                   layer=str(raw["layer"]) if "layer" in raw else None)

    def describe(self) -> str:
        extra = f" field {self.field}" if self.field else ""
        extra += f" in layer {self.layer}" if self.layer else ""
        return f"{self.kind} {self.target}{extra} ({self.when})"


#: testinfra modules a scenario may ask inside the container (see conformance/host/inside.py), in the
#: order a check's module is recognised: ``user`` and ``group`` are also attributes of the earlier ones
INSIDE_MODULES = ("file", "mount_point", "interface", "sysctl", "process", "user", "group")


@dataclass(frozen=True)
class InsideCheck:
    """``module(argument)`` asked inside the running container; each attribute must meet its expectation."""

    module: str                           # one of INSIDE_MODULES
    argument: Any                         # a path or name; filters for process; None: the module itself
    expect: tuple[tuple[str, Any], ...]   # (attribute, expected value or {matcher: …})

    @classmethod
    def from_yaml(cls, raw: dict[str, Any]) -> "InsideCheck":
        module = next(m for m in INSIDE_MODULES if m in raw)
        return cls(module, raw[module], tuple((k, v) for k, v in raw.items() if k != module))

    def describe(self) -> str:
        arg = self.argument
        if isinstance(arg, dict):
            arg = "(" + ", ".join(f"{k}={v}" for k, v in arg.items()) + ")"
        return self.module if arg is None else f"{self.module} {arg}"


@dataclass(frozen=True)
class Expectations:
    """What must be observed: the entrypoint's exit and output, host facts, checks inside."""

    exit: tuple[int, ...] | None = None
    #: what ``RUNTIME run`` itself returns (scripts and engines read it), a signal death as 128+N
    runtime_exit: tuple[int, ...] | None = None
    stdout: TextExpectation | None = None
    stderr: TextExpectation | None = None
    host: tuple[HostFact, ...] = ()
    #: checks inside the running container with testinfra's modules (conformance/host/inside.py)
    testinfra: tuple[InsideCheck, ...] = ()
    or_refused: bool = False  # a runtime refusing to create (or start) the container passes too
    #: where the checks look must exist, or the verdict is "unobservable" (not a pass, not a fail)
    observable: Expectations | None = None
    #: expectation id (or id prefix) -> why it need not break under a control (it keeps the run honest)
    corroborating: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Mechanism:
    """How a namespaces-and-cgroups runtime is expected to provide the property.

    The verdict follows the property (``expect``); when the property holds but
    these checks do not, the runtime provides it another way (a sandbox's own
    kernel answering ENOSYS rather than a seccomp filter's EPERM): the cell
    says so instead of failing.
    """

    name: str
    expect: Expectations


@dataclass(frozen=True)
class LaunchSpec:
    """How the harness starts the runtime process itself, beyond the bundle.

    ``fds``: descriptors it is started with, at 3, 4, … in this order (each one
    of HANDED_FDS: a host file holding ``{{fd_token}}``, one end of a socket
    pair, the read end of a pipe), as a caller that forgot them open would;
    ``preserve_fds``: ``--preserve-fds N`` on create (and run);
    ``console_socket``: whether create names a console socket (``--console-socket``);
    None, the default: exactly when the config has ``process.terminal`` true.
    """

    fds: tuple[str, ...] = ()
    preserve_fds: int = 0
    console_socket: bool | None = None

    @classmethod
    def from_yaml(cls, raw: dict[str, Any] | None) -> "LaunchSpec":
        raw = raw or {}
        given = raw.get("console_socket")
        return cls(tuple(raw.get("fds", ())), int(raw.get("preserve_fds", 0)),
                   None if given is None else bool(given))


@dataclass(frozen=True)
class Scenario:
    """One isolation property, the spec change it needs, and how to judge it."""

    id: str
    title: str
    tags: tuple[str, ...]
    #: negative controls: each a set of reference-runtime switches turned off together, which
    #: must make the scenario fail; every expectation must break under at least one of them
    controls: tuple[tuple[str, ...], ...]
    args: tuple[str, ...]
    expect: Expectations
    path: Path
    line: int
    patch: dict[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    host_setup: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT_S
    clause: str | None = None
    description: str | None = None
    #: a layered image mounted as overlay for the rootfs (conformance/host/image.py); None: plain busybox
    image: ImageSpec | None = None
    #: lifecycle scenarios: the runtime verbs to drive one by one (see conformance/host/steps.py)
    steps: tuple[Any, ...] = ()
    #: how a namespaces-and-cgroups runtime provides the property (None: nothing to tell apart)
    mechanism: Mechanism | None = None
    #: what the runtime process is started with beyond the bundle (descriptors, --preserve-fds)
    launch: LaunchSpec = LaunchSpec()
    #: the validated YAML document, so the scenario can travel to a remote host as JSON
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def control(self) -> tuple[str, ...]:
        """Every switch any of the controls turns off (for listings by switch)."""
        return tuple(dict.fromkeys(s for switches in self.controls for s in switches))

    def _blocks(self) -> list[Expectations]:
        """Every expectation block: the property, where it looks, and the mechanism."""
        blocks = [self.expect]
        if self.expect.observable is not None:
            blocks.append(self.expect.observable)
        if self.mechanism is not None:
            blocks.append(self.mechanism.expect)
        return blocks

    @property
    def wants_runtime_exit(self) -> bool:
        """True when some block expects what ``RUNTIME run`` returns (observe.runtime_exit)."""
        return any(block.runtime_exit is not None for block in self._blocks())

    @property
    def host_facts(self) -> tuple[HostFact, ...]:
        """All host facts to read, of every block; an observation refers to them by index."""
        return tuple(f for block in self._blocks() for f in block.host)

    @property
    def inside_checks(self) -> tuple[InsideCheck, ...]:
        """All testinfra checks to read inside, of every block; readings refer to them by index."""
        return tuple(c for block in self._blocks() for c in block.testinfra)

    @property
    def needs_lifecycle(self) -> bool:
        """True when a host fact must be read while the container exists (create/start path)."""
        # or_refused: only create/start tells a refusal apart from the entrypoint's own exit
        # testinfra: its checks exec into the entrypoint while it runs
        return (bool(self.host_facts) or bool(self.steps) or self.expect.or_refused
                or bool(self.inside_checks))

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"

    def to_json(self) -> dict[str, Any]:
        return {"doc": self.source, "path": str(self.path), "line": self.line}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Scenario":
        """Rebuild a scenario that was validated elsewhere (the harness side)."""
        return from_document(data["doc"], {(): data["line"]}, Path(data["path"]))


def _statuses(raw: Any) -> tuple[int, ...] | None:
    return None if raw is None else ((raw,) if isinstance(raw, int) else tuple(raw))


def _expectations(raw: dict[str, Any]) -> Expectations:
    return Expectations(
        exit=_statuses(raw.get("exit")), runtime_exit=_statuses(raw.get("runtime_exit")),
        stdout=TextExpectation.from_yaml(raw["stdout"]) if "stdout" in raw else None,
        stderr=TextExpectation.from_yaml(raw["stderr"]) if "stderr" in raw else None,
        host=tuple(HostFact.from_yaml(h) for h in raw.get("host", ())),
        testinfra=tuple(InsideCheck.from_yaml(c) for c in raw.get("testinfra", ())),
        or_refused=bool(raw.get("or_refused")),
        observable=_expectations(raw["observable"]) if "observable" in raw else None,
        corroborating=tuple((str(k), str(v)) for k, v in (raw.get("corroborating") or {}).items()),
    )


def _controls(raw: list[Any]) -> tuple[tuple[str, ...], ...]:
    """``control: [a, b]`` is one control (a and b off together); ``[[a], [b]]`` two of them."""
    if all(isinstance(c, str) for c in raw):
        return (tuple(raw),)
    return tuple((c,) if isinstance(c, str) else tuple(c) for c in raw)


def from_document(doc: dict[str, Any], lines: dict[LinePath, int], path: Path) -> Scenario:
    run = doc.get("run", "true")  # a lifecycle scenario whose steps create nothing (the CLI's) needs none
    return Scenario(
        id=doc["id"], title=doc["title"], tags=tuple(doc["tags"]), controls=_controls(doc["control"]),
        args=("sh", "-c", run) if isinstance(run, str) else tuple(run),
        expect=_expectations(doc.get("expect", {})), path=path, line=lines.get((), 1),
        patch=doc.get("patch", {}), requires=tuple(doc.get("requires", ())),
        host_setup=tuple(doc.get("host_setup", ())), steps=tuple(doc.get("steps", ())),
        timeout=float(doc.get("timeout", DEFAULT_TIMEOUT_S)),
        clause=doc.get("clause"), description=doc.get("description"), source=doc,
        image=_image(doc, lines, path),
        mechanism=Mechanism(doc["mechanism"]["name"], _expectations(doc["mechanism"]["expect"]))
        if "mechanism" in doc else None,
        launch=LaunchSpec.from_yaml(doc.get("launch")),
    )


def _image(doc: dict[str, Any], lines: dict[LinePath, int], path: Path) -> ImageSpec | None:
    """The scenario's image, if any; a layer the schema cannot judge (a path twice) names its line."""
    if "image" not in doc:
        return None
    try:
        return ImageSpec.from_yaml(doc["image"])
    except ImageError as exc:
        line = lines.get(("image", "layers", exc.layer or 0), lines.get(("image",)))
        raise ScenarioError(str(path), line, f"image.layers.{exc.layer}: {exc}") from None


def id_clashes(scenarios: list[Scenario]) -> dict[Path, ScenarioError]:
    """Each file holding a scenario whose id another scenario claims too, with an error naming both places.

    A matrix row is one scenario, so an id two scenarios claim (in one file or
    in two) makes every file that holds one of them invalid, as a file that
    does not validate is: the plugin turns it into error items and the rest of
    the catalog still runs.  A file collected twice is not a clash with itself.
    """
    claims: dict[str, list[Scenario]] = {}
    for sc in scenarios:
        same_id = claims.setdefault(sc.id, [])
        if not any(c.path == sc.path and c.line == sc.line for c in same_id):
            same_id.append(sc)
    errors: dict[Path, ScenarioError] = {}
    for sc_id, same_id in claims.items():
        for sc in same_id if len(same_id) > 1 else ():
            other = next(c for c in same_id if c is not sc)
            errors.setdefault(sc.path, ScenarioError(str(sc.path), sc.line,
                                                     f"duplicate scenario id {sc_id!r} (also at {other.location})"))
    return errors


def check_unique_ids(scenarios: list[Scenario]) -> None:
    """Two scenarios with one id would share a matrix row: refuse, naming both places."""
    errors = id_clashes(scenarios)
    if errors:
        raise next(iter(errors.values()))
