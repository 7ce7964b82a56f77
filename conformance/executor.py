"""Everything that happens on the host where the runtime runs, for one scenario.

Check the host's requirements, make the host-side canaries, write the
bundle, run and observe the container, remove it all.  The harness calls
this in-process for the local host; for any other host the agent
(``conformance/agent.py``) calls the very same function there and sends the
Execution back as JSON.  Judging stays with the harness.
"""
from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from . import host_setup, hostinfo, inside
from .bundle import build
from .errors import ConformanceError
from .observe import FactReading, Observation, observe
from .scenario import Scenario
from .session import RunSession


@dataclass
class Execution:
    """What one scenario produced on a host: a skip reason, an error, or an observation."""

    skip: str | None = None
    error: str | None = None
    observation: Observation | None = None
    variables: dict[str, str] = field(default_factory=dict)
    oci_version: str | None = None

    def to_json(self, scenario: Scenario) -> dict[str, Any]:
        out: dict[str, Any] = {"skip": self.skip, "error": self.error, "variables": self.variables,
                               "oci_version": self.oci_version, "observation": None}
        if self.observation is not None:
            obs = asdict(self.observation)
            obs["facts"] = [{"index": scenario.expect.host.index(r.fact), "value": r.value, "error": r.error}
                            for r in self.observation.facts]
            out["observation"] = obs
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], scenario: Scenario) -> "Execution":
        obs = data.get("observation")
        observation = None
        if obs is not None:
            facts = [FactReading(scenario.expect.host[f["index"]], f["value"], f["error"]) for f in obs.pop("facts")]
            readings = [inside.InsideReading(**r) for r in obs.pop("inside", [])]
            observation = Observation(**obs, facts=facts, inside=readings)
        return cls(data.get("skip"), data.get("error"), observation, data.get("variables") or {},
                   data.get("oci_version"))


def execute(scenario: Scenario, runtime: str, disabled: tuple[str, ...], session: RunSession) -> Execution:
    """Run one scenario on this host with one runtime (``disabled``: ref switches for a control)."""
    reason = hostinfo.unmet(scenario.requires) or inside.unavailable(scenario)
    if reason:
        return Execution(skip=reason)
    try:
        driver = session.driver(runtime, disabled)
    except ConformanceError as exc:  # a missing runtime, or a control switch it does not have
        return Execution(error=str(exc))
    cid = session.new_container_id()
    try:
        with host_setup.prepared(scenario.host_setup, session.workdir) as variables:
            variables["host_hostname"] = socket.gethostname()
            bundle = build(scenario, cid, session.workdir, driver.profile.spec_version, variables)
            try:
                obs = observe(scenario, driver, bundle, cid)
            finally:
                bundle.remove()
        return Execution(observation=obs, variables=bundle.variables, oci_version=driver.profile.spec_version)
    except (ConformanceError, OSError) as exc:
        return Execution(error=f"{scenario.location}: the harness could not run this scenario: {exc}")
