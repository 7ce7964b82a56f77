"""Phase: the Linux security module's label — ``process.apparmorProfile``, ``process.selinuxLabel``,
``linux.mountLabel``.

Both LSMs take the process's label on its next execve: the runtime writes
``exec PROFILE`` (AppArmor) or the context (SELinux) to the process's
``attr/exec`` just before it execs the container's process, so that nothing
the runtime itself still does runs confined.  The label needs the LSM on;
where it is off, a config that asks for one is refused at create rather
than run unconfined (the profile is a promise about the process).  Switches
``apparmor`` and ``selinux`` ignore the fields (neither checked nor applied).
"""
from __future__ import annotations

import os

from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .hints import Config, Process, Switches


def apparmor_enabled() -> bool:
    """AppArmor is the kernel's (enabled) and its filesystem is there to load profiles into."""
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            on = f.read().strip() == "Y"
    except OSError:
        return False
    return on and os.path.isdir("/sys/kernel/security/apparmor")


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def check(config: Config, proc: Process, disabled: Switches) -> None:
    """Refuse a label this host cannot give (no AppArmor, no SELinux), naming the field."""
    if proc.get("apparmorProfile") and "apparmor" not in disabled and not apparmor_enabled():
        raise Error("process.apparmorProfile %r: AppArmor is not enabled on this host (the process would run "
                    "unconfined)" % proc["apparmorProfile"])
    if "selinux" in disabled or selinux_enabled():
        return
    if proc.get("selinuxLabel"):
        raise Error("process.selinuxLabel %r: SELinux is not enabled on this host" % proc["selinuxLabel"])
    if (config.get("linux") or {}).get("mountLabel"):
        raise Error("linux.mountLabel %r: SELinux is not enabled on this host" % config["linux"]["mountLabel"])


def mount_label(config: Config, disabled: Switches) -> str | None:
    """The ``context=`` mount option for the container's own filesystems (tmpfs, devpts, mqueue), or None."""
    label = (config.get("linux") or {}).get("mountLabel")
    return None if not label or "selinux" in disabled else 'context="%s"' % label


def _write_attr(name: str, lsm: str, value: str, what: str) -> None:
    """The label the next execve takes: /proc/thread-self/attr/<lsm>/<name> where the kernel has
    per-LSM files (5.8+), else the shared /proc/thread-self/attr/<name>."""
    for path in ("/proc/thread-self/attr/%s/%s" % (lsm, name), "/proc/thread-self/attr/%s" % name):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.write(fd, value.encode())
            return
        except OSError as e:
            raise Error("%s: writing %r to %s: %s" % (what, value, path, e.strerror)) from None
        finally:
            os.close(fd)
    raise Error("%s: the kernel has no /proc/thread-self/attr/%s" % (what, name))


def apply(proc: Process, disabled: Switches) -> None:
    """Label the process for its execve (the last step before it: see the module doc)."""
    if proc.get("apparmorProfile") and "apparmor" not in disabled:
        _write_attr("exec", "apparmor", "exec " + proc["apparmorProfile"], "process.apparmorProfile")
    if proc.get("selinuxLabel") and "selinux" not in disabled:
        _write_attr("exec", "selinux", proc["selinuxLabel"], "process.selinuxLabel")
