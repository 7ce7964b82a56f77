"""Every registered driver against the driver interface, and the lane parse point.

As pytest-testinfra checks each backend against ``BaseBackend``: a driver
class must leave nothing abstract, keep every member of the interface in the
same form (method, classmethod, property) with the same signature, and be
registered under its own lane name with a spelling that names exactly one
runtime.  A lane added to ``DRIVERS`` is checked here without a new test.
"""
from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.host import drivers
from conformance.host.drivers import DRIVERS, Deferred, Lane, Lanes, RuntimeDriver
from conformance.host.drivers.cli import CliDriver
from conformance.host.session import RunSession


def _form(cls: type, name: str) -> str:
    member = inspect.getattr_static(cls, name)
    if isinstance(member, property):
        return "property"
    if isinstance(member, classmethod):
        return "classmethod"
    if isinstance(member, staticmethod):
        return "staticmethod"
    return "method" if callable(member) else "attribute"


def _signature(cls: type, name: str) -> list[tuple[str, Any, Any, Any]]:
    """(name, kind, default, annotation) of each parameter, and the return annotation last."""
    sig = inspect.signature(getattr(cls, name))
    return [(p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values()] + \
        [("return", None, None, sig.return_annotation)]


def interface_members() -> list[str]:
    return sorted(n for n in vars(RuntimeDriver) if not n.startswith("_"))


def interface_violations(lane: str, cls: type) -> list[str]:
    """What makes ``cls``, registered as ``lane``, not a driver of the interface."""
    if not (isinstance(cls, type) and issubclass(cls, RuntimeDriver)):
        return [f"{lane}: {cls!r} is not a RuntimeDriver"]
    found = []
    if inspect.isabstract(cls):
        found.append(f"{lane}: {cls.__name__} leaves abstract: {', '.join(sorted(cls.__abstractmethods__))}")
    if cls.lane != lane:
        found.append(f"{lane}: {cls.__name__}.lane is {cls.lane!r}")
    if cls.spelling.count("{}") != 1:
        found.append(f"{lane}: spelling {cls.spelling!r} must hold one {{}}")
    for name in interface_members():
        form = _form(RuntimeDriver, name)
        if _form(cls, name) != form:
            found.append(f"{lane}: {cls.__name__}.{name} is a {_form(cls, name)}, the interface's a {form}")
        elif form in ("method", "classmethod") and _signature(cls, name) != _signature(RuntimeDriver, name):
            found.append(f"{lane}: {cls.__name__}.{name}{inspect.signature(getattr(cls, name))} differs from "
                         f"the interface's {inspect.signature(getattr(RuntimeDriver, name))}")
    return found


def test_every_registered_driver_implements_the_interface():
    assert DRIVERS, "no driver registered"
    assert [v for lane, cls in DRIVERS.items() for v in interface_violations(lane, cls)] == []


def test_the_interface_holds_the_verbs_the_harness_uses():
    """The list the lanes to come must fill in; a verb dropped from it is a change of contract."""
    verbs = {"run", "create", "start", "state", "kill", "wait", "delete", "exec_argv", "list_ids", "cleanup",
             "pause", "resume", "update", "ps", "call"}
    assert verbs <= set(RuntimeDriver.__abstractmethods__)
    assert {"label", "version", "spec_version", "adaptations", "sandboxed"} <= {
        n for n in interface_members() if _form(RuntimeDriver, n) == "property"}
    assert list(inspect.signature(RuntimeDriver.delete).parameters) == ["self", "cid", "force"]
    assert inspect.signature(RuntimeDriver.delete).parameters["force"].default is True


def test_the_checker_can_fail():
    """A made-up driver with each kind of mistake is reported, mistake by mistake."""

    class Broken(CliDriver):
        lane = "other"
        spelling = "x/{}/{}"

        def delete(self, cid: str) -> None:  # type: ignore[override]  # lost its force
            pass

        def label(self) -> str:  # type: ignore[override]  # a method, not a property
            return "broken"

    class Unfinished(RuntimeDriver):
        lane = "unfinished"

        def start(self, cid: str) -> None:
            pass

    broken = interface_violations("broken", Broken)
    assert any("Broken.lane is 'other'" in v for v in broken)
    assert any("spelling 'x/{}/{}'" in v for v in broken)
    assert any(v.startswith("broken: Broken.delete(self, cid: 'str')") for v in broken), broken
    assert any("Broken.label is a method, the interface's a property" in v for v in broken)
    unfinished = interface_violations("unfinished", Unfinished)
    assert len(unfinished) == 1 and "leaves abstract: call, cleanup, create, delete, exec_argv" in unfinished[0]
    assert interface_violations("str", str) == ["str: <class 'str'> is not a RuntimeDriver"]


def _modules_after(code: str) -> list[str]:
    """The conformance driver modules and PyYAML a fresh interpreter has loaded after ``code``."""
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    return [m for m in json.loads(done.stdout.splitlines()[-1])
            if m.startswith("conformance.host.drivers.") or m == "yaml"]


def test_a_lane_module_is_imported_only_when_its_class_is_asked_for():
    """The plugin and a bare runtime's parse and label load neither the engine's nor the rootless lane's
    code (nor PyYAML); asking for a lane's class does, that lane's only."""
    bare = _modules_after("import conformance.plugin.hooks\nfrom conformance.host import drivers\n"
                          "drivers.parse('runc'), drivers.label('runc'), drivers.parse('containerd/runc')")
    assert bare == ["conformance.host.drivers.base", "conformance.host.drivers.cli",
                    "conformance.host.drivers.procs"]
    engine = _modules_after("from conformance.host import drivers\ndrivers.label('containerd/runc')")
    assert "conformance.host.drivers.containerd" in engine and "conformance.host.drivers.rootless" not in engine


def test_a_deferred_lane_must_be_spelt_as_its_class_spells_it():
    lanes = Lanes({"bare": CliDriver, "engine": Deferred("engine/{}", lambda: _EngineLane),
                   "wrong": Deferred("wrong/{}", lambda: _EngineLane)})
    assert lanes.spelling("engine") == "engine/{}" and lanes.loaded() == [CliDriver]
    assert lanes["engine"] is _EngineLane and lanes.loaded() == [CliDriver, _EngineLane]
    with pytest.raises(TypeError, match=r"drivers/__init__.py: lane 'wrong' is registered as spelt 'wrong/\{\}'"):
        lanes["wrong"]


def test_a_runtime_name_or_path_is_the_bare_lane():
    assert drivers.parse("runc") == Lane("bare", "runc")
    assert drivers.parse("/opt/build/my-runc") == Lane("bare", "/opt/build/my-runc")
    assert drivers.parse("runc").driver_class is CliDriver
    assert drivers.label("ref") == "ref" and drivers.label("/opt/build/my-runc") == "my-runc"


class _EngineLane(CliDriver):
    """Stands in for a lane to come: spelt ``engine/NAME``; drives the bare CLI underneath."""

    lane = "engine"
    spelling = "engine/{}"


class _UserLane(CliDriver):
    lane = "user"
    spelling = "{}:user"


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
def test_a_new_lane_is_one_registration(monkeypatch):
    """Registering a class is all it takes for parse, labels, describe and the session to use it."""
    monkeypatch.setitem(DRIVERS, "engine", _EngineLane)
    monkeypatch.setitem(DRIVERS, "user", _UserLane)
    assert [v for lane, cls in DRIVERS.items() for v in interface_violations(lane, cls)] == []
    assert drivers.parse("engine/runc") == Lane("engine", "runc")
    assert drivers.parse("runc:user") == Lane("user", "runc")
    assert drivers.parse("engine//usr/sbin/runc") == Lane("engine", "/usr/sbin/runc")
    assert drivers.parse("engine/") == Lane("bare", "engine/")  # names no runtime: a path, as before
    assert drivers.label("engine//usr/sbin/runc") == "engine/runc"
    column, entry = drivers.describe("runc:user", {})
    assert column == "runc:user" and entry["path"] == shutil.which("runc")
    session = RunSession()
    try:
        driver = session.driver("engine/runc")
        assert type(driver) is _EngineLane and driver.label == "engine/runc"
        assert driver.root.parent == session._state_root and driver.root.name == "engine-runc"
        assert session.driver("runc").root != driver.root  # lanes never share a state root
    finally:
        session.close()
    assert not Path(driver.root).exists()


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
def test_a_host_describes_the_runtimes_its_session_resolved_without_asking_them_again(monkeypatch):
    """The matrix's runtimes entry of this machine comes from the session's profiles: a runtime it ran
    is not started again (``--version``, ``run --help``) to be described; the entry is the same."""
    from conformance.host import runtimes
    from conformance.hosts.targets import LocalTarget

    fresh = drivers.describe("runc", {})
    target = LocalTarget({})
    try:
        target.session.profile("runc")
        asked: list[str] = []
        real = runtimes.resolve
        monkeypatch.setattr(runtimes, "resolve", lambda name, flags=None: asked.append(name) or real(name, flags))
        described = target.describe(["runc"])
        assert asked == [] and described["runtimes"] == {fresh[0]: fresh[1]}
    finally:
        target.close()
