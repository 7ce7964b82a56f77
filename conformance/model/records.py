"""Observation records: what a host saw of one container, as plain data.

The host side (conformance/host/) fills them; the judge reads them; between
a remote host and the harness they travel as JSON (``Execution.to_json`` /
``from_json``), so everything here is standard library and JSON-able.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, TypedDict

from .scenario import HostFact, Scenario


class RuntimeEntry(TypedDict, total=False):
    """How one runtime was driven on one host, as the matrix prints it (``runtimes``, ``host_runtimes``)."""

    path: str | None
    version: str | None
    spec_version: str
    global_flags: List[str]
    adaptations: List[str]     # every quirk the harness applied, in words
    #: how the harness learned that the runtime runs its containers in a sandbox (the probe's
    #: evidence), or False when its probe found the container's own process; absent: not probed
    sandboxed: str | bool
    lane: str                  # bare, containerd, rootless …
    engine: str                # the engine that drove the runtime: "containerd 1.6.20"
    shim: str                  # the engine's shim: "io.containerd.runc.v2"
    snapshotter: str           # who unpacked and mounted a scenario's image layers
    rootless: bool             # the runtime ran as an unprivileged user (the rootless lane)
    error: str                 # why the runtime could not be used on that host


class HostDescription(TypedDict):
    """What a host says of itself: its profile (kernel, cgroup layout …) and its runtimes."""

    profile: Dict[str, Any]
    runtimes: Dict[str, RuntimeEntry]


@dataclass(frozen=True)
class SandboxProbe:
    """What the harness learned, once per runtime and host, of where a container's processes run.

    ``sandboxed``: the process the runtime names in ``state`` is not running
    the container's entrypoint once it started (gVisor's user-space kernel, a
    VM's monitor): host-side facts about that pid describe the sandbox.
    ``evidence`` says what was seen, in words, either way (or why the probe
    could not tell: then ``sandboxed`` is False, the strict reading).
    ``ran``: False when the probe container did not run at all.
    """

    sandboxed: bool
    evidence: str
    #: what ``/proc/<pid>/exe`` of a created, not yet started init reads: the runtime's own init
    #: ("" when the probe did not get that far); an init whose exe reads otherwise has exec'd the entrypoint
    init_exe: str = ""
    #: False when the probe container did not run at all
    ran: bool = True


@dataclass
class StepResult:
    """One lifecycle step (``create``, ``state running`` …): whether the runtime answered as it must."""

    step: str
    ok: bool
    detail: str
    index: int = -1   # its place in the scenario's ``steps`` (the expectation id is ``steps[index]``)
    #: set when what the step read cannot describe the container (it describes a sandbox, or the lane
    #: gave the container no such thing: rootless without a cgroup): not judged, with this reason
    sandbox: str | None = None


@dataclass
class InsideReading:
    """What one attribute of one check read inside the container (JSON-able)."""

    index: int               # which check of the scenario's ``inside_checks`` (every block's testinfra)
    attribute: str
    value: Any = None
    error: str | None = None


@dataclass
class FactReading:
    """One host fact as read (``value``), or why it could not be read (``error``)."""

    fact: HostFact
    value: str | None = None
    error: str | None = None


@dataclass
class Observation:
    """Everything one container run showed: its exit and output, host facts, checks inside, steps."""

    exit: int | None = None
    #: what ``RUNTIME run`` returned (its own run, or one more container: executor._second_run)
    runtime_exit: int | None = None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    runtime_error: str | None = None
    facts: list[FactReading] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    steps: list[StepResult] = field(default_factory=list)  # lifecycle steps, in order
    inside: list[InsideReading] = field(default_factory=list)  # expect.testinfra, read while running
    #: how the harness knows the container runs inside a sandbox (its host process is not the
    #: entrypoint, e.g. gVisor's user-space kernel: SandboxProbe.evidence); None for a runtime whose
    #: container is a host process
    sandboxed: str | None = None


@dataclass
class Execution:
    """What one scenario produced on a host: a skip reason, an error, or an observation."""

    skip: str | None = None
    error: str | None = None
    observation: Observation | None = None
    variables: dict[str, str] = field(default_factory=dict)
    oci_version: str | None = None
    #: the runtime's sandbox probe, when one was made or known for this run (the harness keeps it per host)
    sandbox: SandboxProbe | None = None
    #: what happened to the host's agent on the way (it died and was restarted), for the cell's evidence;
    #: set where the harness runs, never sent by a host
    host_note: str | None = None

    def to_json(self, scenario: Scenario) -> dict[str, Any]:
        out: dict[str, Any] = {"skip": self.skip, "error": self.error, "variables": self.variables,
                               "oci_version": self.oci_version, "observation": None,
                               "sandbox": None if self.sandbox is None else asdict(self.sandbox)}
        if self.observation is not None:
            obs = asdict(self.observation)
            facts = scenario.host_facts
            obs["facts"] = [{"index": next(i for i, f in enumerate(facts) if f is r.fact), "value": r.value,
                             "error": r.error} for r in self.observation.facts]
            out["observation"] = obs
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], scenario: Scenario) -> "Execution":
        obs = data.get("observation")
        observation = None
        if obs is not None:
            facts = [FactReading(scenario.host_facts[f["index"]], f["value"], f["error"]) for f in obs.pop("facts")]
            readings = [InsideReading(**r) for r in obs.pop("inside", [])]
            steps = [StepResult(**s) for s in obs.pop("steps", [])]
            observation = Observation(**obs, facts=facts, inside=readings, steps=steps)
        sandbox = data.get("sandbox")
        return cls(data.get("skip"), data.get("error"), observation, data.get("variables") or {},
                   data.get("oci_version"), SandboxProbe(**sandbox) if sandbox else None)
