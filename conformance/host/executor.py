"""Everything that happens on the host where the runtime runs, for one scenario.

Check the host's requirements, make the host-side canaries, write the
bundle, run and observe the container, remove it all.  The harness calls
this in-process for the local host; for any other host the agent
(``conformance/host/agent.py``) calls the very same function there and sends the
Execution back as JSON.  Judging stays with the harness.
"""
from __future__ import annotations

import functools

from conformance.model.errors import ConformanceError, NotApplicable
from conformance.model.records import Execution, Observation
from conformance.model.scenario import Scenario

from . import ahead, drivers, host_setup, hostinfo, hoststate, idle, inside
from .bundle import Bundle, build
from .drivers import RuntimeDriver
from .observe import InitUnseen, observe
from .runexit import run_exit
from .session import RunSession


def execute(scenario: Scenario, runtime: str, disabled: tuple[str, ...], session: RunSession,
            upcoming: ahead.Next | None = None) -> Execution:
    """Run one scenario on this host with one runtime (``disabled``: ref switches for a control).

    The runtime is first asked, once per session, whether it runs containers in a
    sandbox (host/sandbox.py): the observation carries the answer to the judge.
    ``upcoming``: the scenario this host runs next, whose bundle may be written while
    this one's container runs (host/ahead.py).
    """
    written = session.take_ahead()  # this scenario's bundle, if the one before wrote it
    try:
        return _execute(scenario, runtime, disabled, session, upcoming, written)
    finally:
        if written is not None and not written.used:  # written for another scenario, or this one skipped
            _remove(written.bundle)


def _execute(scenario: Scenario, runtime: str, disabled: tuple[str, ...], session: RunSession,
             upcoming: ahead.Next | None, written: ahead.Written | None) -> Execution:
    reason = hostinfo.unmet(scenario.requires) or inside.unavailable(scenario)
    if reason:
        return Execution(skip=reason)
    try:
        driver = session.driver(runtime, disabled)
    except NotApplicable as exc:  # the lane cannot run on this host (no unprivileged user namespaces)
        return Execution(skip=f"{drivers.label(runtime)}: {exc}")
    except ConformanceError as exc:  # a missing runtime, or a control switch it does not have
        return Execution(error=str(exc))
    reason = driver.unsupported(scenario)
    if reason:
        return Execution(skip=reason)
    reason = driver.bundle_needs.unmet(scenario.requires)
    if reason:  # the property cannot exist in this lane (a device node in a user namespace)
        return Execution(skip=f"{driver.label}: {reason}")
    cid = session.new_container_id()
    try:
        found = session.sandbox(runtime, scenario.timeout)
        if driver.bundle_needs.probe_must_run and not found.ran:
            why = found.evidence.partition("; host facts")[0]
            return Execution(error=f"{driver.label} ran no container in this lane: {why}")
        if driver.sandbox is None:  # a control's variant: the same runtime, so the same init (observe.py)
            driver.sandbox = found
        with host_setup.prepared(scenario.host_setup, session.workdir, driver.bundle_needs.owner) as variables:
            variables.update(hoststate.own_variables())
            variables.update(hoststate.before(((f.kind, f.target) for f in scenario.host_facts), variables,
                                              driver.profile.path))
            if written is not None and written.serves(scenario, runtime, disabled, variables):
                written.used = True
                bundle, cid = written.bundle, written.cid
            else:
                try:
                    bundle = build(scenario, cid, session.workdir, driver.spec_version, variables,
                                   driver.bundle_needs, driver.images)
                except NotApplicable as exc:  # the lane cannot express the scenario (rootless_config.py)
                    return Execution(skip=f"{driver.label}: {exc}")
            if upcoming is not None:  # written while this container runs (host/idle.py)
                idle.later(functools.partial(_write_ahead, session, upcoming))
            obs, bundle = _observed(scenario, driver, session, bundle, cid, variables,
                                    found.evidence if found.sandboxed else None)
            excused = driver.bundle_needs.excused(bundle.config, obs.runtime_error)
            if excused:  # rootless without a cgroup: the runtime refused limits, as the spec allows
                return Execution(skip=f"{driver.label}: {excused}")
            if scenario.wants_runtime_exit and obs.runtime_exit is None and obs.runtime_error is None:
                _second_run(scenario, driver, session, variables, obs)
        return Execution(observation=obs, variables=bundle.variables, oci_version=driver.spec_version,
                         sandbox=found)
    except (ConformanceError, OSError) as exc:
        return Execution(error=f"{scenario.location}: the harness could not run this scenario: {exc}")


def _observed(scenario: Scenario, driver: RuntimeDriver, session: RunSession, bundle: Bundle, cid: str,
              variables: dict[str, str], sandboxed: str | None) -> tuple[Observation, Bundle]:
    """The observation of one container, and the bundle it ran from (removed by then).

    When one ``run`` ended before its init could be looked at, and the scenario reads the init's
    cgroups after the exit (observe.InitUnseen), the scenario runs again from a new bundle
    through create and start, which hold the init until it has been seen: the cell is judged on
    that run, with what the first one left behind added to its leaks.
    """
    try:
        return observe(scenario, driver, bundle, cid, sandboxed), bundle
    except InitUnseen as unseen:
        leaks = unseen.leaks
    finally:
        _remove(bundle)
    cid = session.new_container_id()
    bundle = build(scenario, cid, session.workdir, driver.spec_version, variables, driver.bundle_needs, driver.images)
    try:
        obs = observe(scenario, driver, bundle, cid, sandboxed, one_run=False)
    finally:
        _remove(bundle)
    obs.leaks = leaks + obs.leaks
    return obs, bundle


def _write_ahead(session: RunSession, upcoming: ahead.Next) -> None:
    """Write ``upcoming``'s bundle, if that changes nothing (host/ahead.py), for the session to keep.

    Only with what the session has already made — the runtime's driver, its sandbox probe — so
    that nothing here starts a daemon or a probe container; and not for a scenario that would be
    skipped.  A bundle that cannot be written is left to its scenario, which reports why."""
    scenario = upcoming.scenario
    driver = session.made_driver(upcoming.runtime, upcoming.disabled)
    if driver is None or driver.sandbox is None or not ahead.can_write_ahead(scenario):
        return
    if (hostinfo.unmet(scenario.requires) or inside.unavailable(scenario) or driver.unsupported(scenario)
            or driver.bundle_needs.unmet(scenario.requires)):
        return
    variables, cid = hoststate.own_variables(), session.new_container_id()  # all a scenario able to be written ahead has
    try:
        bundle = build(scenario, cid, session.workdir, driver.spec_version, variables, driver.bundle_needs,
                       driver.images)
    except (ConformanceError, OSError):
        return
    session.keep_ahead(ahead.Written(upcoming, cid, variables, bundle))


def _remove(bundle: Bundle) -> None:
    """A bundle whose container is gone (and was checked for leftovers): its files go in the next wait
    for a runtime (host/idle.py); one with an image mounted goes now, so that no overlay of it is
    still mounted while another container is made."""
    if bundle.image is None:
        idle.later(bundle.remove)
    else:
        bundle.remove()


def _second_run(scenario: Scenario, driver: RuntimeDriver, session: RunSession, variables: dict[str, str],
                obs: Observation) -> None:
    """What ``RUNTIME run`` itself returns, when the observation went through create and start.

    One more container, only for the scenarios that expect ``runtime_exit``
    and could not learn it from their own run (their host facts or steps need
    create/start): the same config under a new id, run in the foreground.
    """
    cid = session.new_container_id()
    bundle = build(scenario, cid, session.workdir, driver.spec_version, variables, driver.bundle_needs, driver.images)
    try:
        obs.runtime_exit, leaks = run_exit(scenario, driver, bundle, cid)
        obs.leaks += leaks
    finally:
        bundle.remove()
