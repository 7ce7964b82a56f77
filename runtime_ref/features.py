"""``runtime-ref features``: what this runtime implements, in runc's format,
plus ``switches``: the names of its negative controls."""
from __future__ import annotations

from . import lsm, rootfs, seccomp, security, spec
from .cli import SPEC_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def features() -> dict[str, Any]:
    """The document ``runtime-ref features`` prints."""
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": sorted(set(rootfs._FLAGS) | set(rootfs._PROPAGATION)),
        "linux": {
            "namespaces": sorted(spec.NAMESPACE_SWITCH),
            "capabilities": sorted(security.CAP_NUMBER, key=security.CAP_NUMBER.__getitem__),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {
                "enabled": True,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                            "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                            "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                              "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": sorted(seccomp.AUDIT_ARCH),
                "knownFlags": sorted(seccomp.FLAGS),
                "supportedFlags": sorted(seccomp.FLAGS),
            },
            "apparmor": {"enabled": lsm.apparmor_enabled()},
            "selinux": {"enabled": lsm.selinux_enabled()},
        },
        "annotations": {"org.opencontainers.runtime-ref.version": "0.1.0"},
        "switches": list(spec.SWITCHES),
        "switchDescriptions": dict(spec.SWITCHES),
    }
