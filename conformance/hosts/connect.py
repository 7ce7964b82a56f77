"""From ``--hosts`` specs to targets: one per host, made on first use, closed at the end.

``local`` is this machine, ``qemu://LAYOUT`` a guest booted here
(qemu.py), anything else a host reached through pytest-testinfra's backends
(``ssh://``, ``paramiko://``, ``ansible://GROUP`` expanded from the
inventory).  A host that cannot be set up becomes a BrokenTarget whose
scenarios are errors with one line saying why; the other hosts still run.
"""
from __future__ import annotations

from typing import Any

from conformance.model.errors import ConformanceError

from .targets import BrokenTarget, HostError, LocalTarget, RemoteTarget, Target


def expand(specs: list[str], ansible_inventory: str | None) -> list[str]:
    """Host specs as given, with ``ansible://GROUP`` expanded to one spec per inventory host."""
    out: list[str] = []
    for spec in specs:
        if spec.startswith("ansible://") and ansible_inventory:
            import testinfra  # loaded only for other hosts: a local run does without it

            try:
                hosts = testinfra.get_hosts([spec], ansible_inventory=ansible_inventory)
            except Exception as exc:
                raise HostError(f"host {spec}: cannot read the inventory {ansible_inventory}: {exc}") from None
            out += [f"ansible://{getattr(h.backend.host, 'name', h.backend.host)}" for h in hosts]
        else:
            out.append(spec)
    return out


class Targets:
    """One target per host spec, made on first use and closed at the end of the session."""

    def __init__(self, runtime_flags: dict[str, list[str]], testinfra_options: dict[str, Any], tag: str) -> None:
        self.runtime_flags, self.options, self.tag = runtime_flags, testinfra_options, tag
        self._targets: dict[str, Target] = {}

    def get(self, spec: str) -> Target:
        if spec not in self._targets:
            try:
                self._targets[spec] = self._make(spec)
            except (HostError, ConformanceError) as exc:
                self._targets[spec] = BrokenTarget(spec, str(exc))
        return self._targets[spec]

    def _make(self, spec: str) -> Target:
        if spec == "local":
            return LocalTarget(self.runtime_flags)
        if spec.startswith("qemu://"):
            from .qemu import QemuTarget  # loaded only when a guest is asked for (it loads testinfra)

            return QemuTarget(spec, self.runtime_flags, self.tag)
        import testinfra  # loaded only for other hosts: a local run does without it

        options = {k: v for k, v in self.options.items() if v}
        try:
            host = testinfra.get_host(spec, **options)
        except Exception as exc:
            raise HostError(f"host {spec}: {type(exc).__name__}: {exc}") from None
        return RemoteTarget(spec, host.backend, self.runtime_flags, self.tag)

    def made(self) -> list[str]:
        """The specs whose target exists (each was reached, or found broken, in this process)."""
        return list(self._targets)

    def close(self) -> None:
        for target in self._targets.values():
            target.close()
        self._targets.clear()
