"""A real sshd on 127.0.0.1 for the remote-host tests: the remote host is this machine."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSH_OPTIONS = "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"


@dataclass
class Sshd:
    port: int
    key: Path
    ssh_config: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workdir: Path) -> tuple[Sshd, subprocess.Popen, bool]:
    """Start sshd in the foreground (we own its pid); returns it and whether /run/sshd was made."""
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / name)], check=True)
    shutil.copy(workdir / "user_key.pub", workdir / "authorized_keys")
    port = _free_port()
    (workdir / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {workdir}/host_key\nAuthorizedKeysFile {workdir}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\nUseDNS no\n"
        f"PidFile {workdir}/sshd.pid\n")
    (workdir / "ssh_config").write_text(SSH_OPTIONS)
    made_privsep = not Path("/run/sshd").exists()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(workdir / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(workdir / "sshd.log", "wb"))
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4) == b"SSH-":
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("test sshd did not start: " + (workdir / "sshd.log").read_text())
        time.sleep(0.05)
    return Sshd(port, workdir / "user_key", workdir / "ssh_config"), proc, made_privsep


def stop(proc: subprocess.Popen, made_privsep: bool) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if made_privsep:
        shutil.rmtree("/run/sshd", ignore_errors=True)
