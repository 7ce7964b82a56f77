"""Collection and items: scenario files × runtimes × hosts, and the negative controls.

Each item runs its scenario on a target host (conformance/hosts/targets.py), judges
the observation (conformance/judge/verdict.py) and records the result as a user
property, which xdist also ships from its workers to the controller.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from conformance.catalog.loaded_cache import loaded, loaded_all
from conformance.host.ahead import Next
from conformance.host.drivers import label as runtime_label
from conformance.judge.verdict import Verdict, judge
from conformance.model.errors import ScenarioError
from conformance.model.expectations import expectation_refs
from conformance.model.scenario import Scenario, id_clashes
from conformance.model.verdicts import ERROR, FAIL, OTHER_MECHANISM, PASS, SKIP, UNOBSERVABLE
from conformance.reporting.rows import ResultRow

from .stash import RESULT_KEY, hosts_key, runtimes_key, scenarios_dir, targets_key


class Catalog(pytest.Directory):
    """Every scenario file of the scenario directory."""

    def collect(self) -> Iterator[pytest.Collector]:
        root = scenarios_dir(self.config)
        if not root.is_dir():
            raise pytest.UsageError(f"scenario directory {root} does not exist (see --scenarios)")
        paths = sorted(root.rglob("*.y*ml"))
        kept = loaded_all(root, paths)  # the whole catalog from one cache entry when no file changed
        for path in paths:
            file = ScenarioFile.from_parent(self, path=path)
            file.kept = kept.get(path)
            yield file


class ScenarioFile(pytest.File):
    """One YAML file: its scenarios × runtimes × hosts, or one error item per runtime if it is invalid.

    Invalid means: it does not load (YAML, schema), or a scenario id in it is
    claimed twice (here, or in another file: pytest_collection_modifyitems
    then calls error_items for both files).
    """

    #: what the file holds once collected; empty while it has not been, or when it is invalid
    scenarios: tuple[Scenario, ...] = ()
    #: what the catalog's cache entry holds for this file (None: not known there, load it)
    kept: list[Scenario] | None = None

    def collect(self) -> Iterator[pytest.Item]:
        try:
            scenarios = self.kept if self.kept is not None else loaded(self.path)
        except ScenarioError as exc:
            from conformance.catalog.loader import readable_tags  # an invalid file only (the cache keeps none)

            yield from self.error_items(exc, readable_tags(self.path))
            return
        clash = id_clashes(scenarios).get(self.path)
        if clash is not None:
            yield from self.error_items(clash, tags_of(scenarios))
            return
        self.scenarios = tuple(scenarios)
        for scenario in scenarios:
            yield from self._scenario_items(scenario)

    def _scenario_items(self, scenario: Scenario) -> Iterator[pytest.Item]:
        runtimes, hosts = self.config.stash[runtimes_key], self.config.stash[hosts_key]
        items = [ScenarioItem.from_parent(self, name=f"{scenario.id}[{runtime_label(runtime)}@{host}]",
                                          scenario=scenario, runtime=runtime, host=host)
                 for host in hosts for runtime in runtimes]
        if self.config.getoption("controls"):  # the reference runtime, with each control's switches off, on every host
            for host in hosts:
                for switches in scenario.controls:
                    items.append(ControlItem.from_parent(
                        self, name=f"{scenario.id}[ref-without-{'+'.join(switches)}@{host}]",
                        scenario=scenario, runtime="ref", host=host, switches=switches))
                    items[-1].add_marker(pytest.mark.control)
        for item in items:
            _mark_tags(item, scenario.tags)
            yield item

    def error_items(self, error: ScenarioError, tags: tuple[str, ...]) -> list[pytest.Item]:
        """One error item per runtime, named ``FILE[runtime@local]`` and marked with ``tags``.

        They need no runtime: each records an ``error`` cell for the file and
        fails, so the session goes on and the matrix shows the problem.
        """
        items: list[pytest.Item] = []
        for runtime in self.config.stash[runtimes_key]:
            item = InvalidScenarioItem.from_parent(self, name=f"{self.path.name}[{runtime_label(runtime)}@local]",
                                                   error=error, runtime=runtime, tags=tags)
            _mark_tags(item, tags)
            items.append(item)
        return items


def _mark_tags(item: pytest.Item, tags: tuple[str, ...]) -> None:
    """Scenario tags are pytest marks, so ``-m pid`` selects."""
    for tag in tags:
        item.add_marker(getattr(pytest.mark, tag))


def tags_of(scenarios: Iterable[Scenario]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(tag for sc in scenarios for tag in sc.tags))


class ScenarioFailure(Exception):
    """Raised by an item whose verdict is fail or error; carries the verdict."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.evidence)
        self.verdict = verdict


def _record(item: pytest.Item, result: ResultRow) -> None:
    item.user_properties.append((RESULT_KEY, json.dumps(result)))


class InvalidScenarioItem(pytest.Item):
    """Stands for an invalid scenario file on one runtime: fails with the file's error, naming file and line.

    Its matrix row is the file (relative to the scenario directory), its cell
    an ``error`` marked ``invalid``, which --baseline never accepts.
    """

    def __init__(self, *, error: ScenarioError, runtime: str, tags: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.error, self.runtime, self.tags = error, runtime, tags

    def _row(self) -> str:
        try:
            return self.path.resolve().relative_to(scenarios_dir(self.config)).as_posix()
        except ValueError:
            return self.path.name

    def runtest(self) -> None:
        _record(self, {"scenario": self._row(), "runtime": runtime_label(self.runtime), "host": "local",
                       "verdict": ERROR, "tags": list(self.tags), "duration_s": 0.0, "title": "invalid scenario file",
                       "evidence": str(self.error), "file": f"{self._row()}:{self.error.line or 1}",
                       "invalid": True})
        raise self.error

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, (self.error.line or 1) - 1, f"invalid scenario: {self.path.name}"


class ScenarioItem(pytest.Item):
    """One scenario on one runtime and host: passes when the property holds."""

    disabled: tuple[str, ...] = ()
    #: the scenario its host runs next, if pytest already knows it (hooks.pytest_runtest_protocol)
    upcoming: Next | None = None

    def __init__(self, *, scenario: Scenario, runtime: str, host: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.scenario, self.runtime, self.host = scenario, runtime, host

    def precedes(self, nextitem: pytest.Item | None) -> None:
        """Learn what runs after this item on the same host: its bundle is written while this one runs."""
        if isinstance(nextitem, ScenarioItem) and nextitem.host == self.host:
            self.upcoming = Next(nextitem.scenario, nextitem.runtime, nextitem.disabled)
        else:
            self.upcoming = None

    def _result(self, verdict: str, evidence: str, duration: float = 0.0, oci_version: str | None = None,
                checks: Verdict | None = None) -> ResultRow:
        """This cell as the matrix records it (a control's also says what broke: ``checks``)."""
        sc = self.scenario
        row: ResultRow = {"scenario": sc.id, "runtime": runtime_label(self.runtime), "host": self.host,
                          "verdict": verdict, "tags": list(sc.tags), "duration_s": round(duration, 4),
                          "evidence": evidence, "title": sc.title, "control": list(sc.control), "clause": sc.clause,
                          "file": f"{sc.path.name}:{sc.line}", "oci_version": oci_version}
        if self.disabled:
            row["disabled"] = list(self.disabled)
        if checks is not None:
            self._add_proof(row, checks)
        return row

    def runtest(self) -> None:
        target = self.config.stash[targets_key].get(self.host)
        done = target.execute(self.scenario, self.runtime, self.disabled, self.upcoming)
        if done.skip:
            reason = done.skip + (f" [{done.host_note}]" if done.host_note else "")
            _record(self, self._result(SKIP, reason))
            pytest.skip(reason)
        if done.error or done.observation is None:
            verdict, duration = Verdict(ERROR, done.error or "no observation"), 0.0
        else:
            verdict = judge(self.scenario, done.observation, done.variables)
            duration = done.observation.duration_s
        row = self._result(verdict.verdict, verdict.evidence, duration, done.oci_version, verdict)
        if done.sandbox is not None and done.sandbox.sandboxed:  # the matrix header says how it was learned
            row["sandboxed"] = done.sandbox.evidence
        _note_image(row, done.variables)
        if done.host_note:  # the host's agent died on the way and was restarted: the cell says so
            row["host_note"] = done.host_note
            row["evidence"] = f"{row['evidence']} [{done.host_note}]"
        _record(self, row)
        self._conclude(verdict)

    def _add_proof(self, row: ResultRow, verdict: Verdict) -> None:
        """What only some items record: a negative control says what broke."""

    def _conclude(self, verdict: Verdict) -> None:
        """pass: the item passes; other-mechanism: passes, the mechanism seen kept as a junit property;
        unobservable: a skip with the reason (junit readers show both); fail, error: the item fails."""
        if verdict.verdict == OTHER_MECHANISM:
            self.user_properties.append(("mechanism", verdict.evidence))
        elif verdict.verdict == UNOBSERVABLE:
            pytest.skip(f"unobservable: {verdict.evidence}")
        elif verdict.verdict != PASS:
            raise ScenarioFailure(verdict)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailure):
            v = excinfo.value.verdict
            lines = [f"{self.scenario.id} on {self.runtime}: {v.verdict.upper()} — {self.scenario.title}",
                     f"  scenario: {self.scenario.location}"]
            lines += [f"  ✗ {c.detail}" for c in v.checks if not c.ok and c.judged] or [f"  {v.evidence}"]
            return "\n".join(lines)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.scenario.path, self.scenario.line - 1, f"{self.scenario.id} [{self.runtime}@{self.host}]"


class ControlFailure(Exception):
    """A negative control that did not fail: the scenario cannot see its property go missing."""


class ControlItem(ScenarioItem):
    """The scenario on the reference runtime with one control's switches off: must FAIL.

    This is what makes a scenario trustworthy: turning off the primitive it is
    about must turn its verdict to fail, and the result names which of its
    expectations broke (the matrix counts, per scenario, the expectations
    proven by a control, those marked corroborating, and those unproven).  A
    control that still passes, errors, or only reaches "other mechanism" or
    "unobservable" proves nothing, and fails this item.
    """

    def __init__(self, *, switches: tuple[str, ...], **kw: Any) -> None:
        super().__init__(**kw)
        self.disabled = switches

    def _add_proof(self, row: ResultRow, verdict: Verdict) -> None:
        refs = expectation_refs(self.scenario)
        row["broken"] = verdict.broken
        row["expectations"] = [r.id for r in refs if r.needs_proof]
        row["corroborating"] = {r.id: r.corroborating for r in refs if r.corroborating is not None}

    def _conclude(self, verdict: Verdict) -> None:
        off = ", ".join(self.disabled)
        if verdict.verdict != FAIL:
            what = {PASS: "still passes", ERROR: "errors"}.get(verdict.verdict, f"reads {verdict.verdict!r}")
            raise ControlFailure(
                f"{self.scenario.location}: with {off} switched off in ref the scenario {what}, so it does not "
                f"prove its property can fail. Evidence: {verdict.evidence}")
        if not verdict.broken:
            raise ControlFailure(
                f"{self.scenario.location}: with {off} switched off in ref the scenario fails only on the harness's "
                f"own checks (timeout, cleanup), not on one of its expectations. Evidence: {verdict.evidence}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ControlFailure):
            return f"negative control not proven: {excinfo.value}"
        return super().repr_failure(excinfo)


def _note_image(row: ResultRow, variables: dict[str, str]) -> None:
    """An image scenario's cell names who unpacked and mounted the layers (containerd's snapshotter on the
    engine lane, the harness on the bare one) and, when an engine imported it, the image's digest."""
    snapshotter = variables.get("snapshotter")
    if not snapshotter:
        return
    row["snapshotter"] = snapshotter
    digest = variables.get("image_digest")
    if digest:
        row["image_digest"] = digest
    row["evidence"] += f" | image {digest + ' ' if digest else ''}unpacked and mounted by {snapshotter}"
