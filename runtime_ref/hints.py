"""Names for the type hints of runtime-ref, read by type checkers only.

Every other module imports this under ``if TYPE_CHECKING:`` (with
``TYPE_CHECKING = False`` of its own) and has ``from __future__ import
annotations``, so hints are never evaluated and ``typing`` (~15 ms to import)
costs a container start nothing.  Nothing imports this module at run time.
"""
from __future__ import annotations

from typing import AbstractSet, Any, Dict, List, Optional, Tuple, TypedDict

#: config.json, parsed (validated against ``spec.SCHEMA``)
Config = Dict[str, Any]
#: its ``process`` object, or what ``exec --process`` reads
Process = Dict[str, Any]
#: the switches turned off for this container (negative controls; ``spec.SWITCHES``)
Switches = AbstractSet[str]
#: namespace type -> the path of one to join, or None for a new one
Namespaces = Dict[str, Optional[str]]
#: a compiled ``linux.seccomp``: classic BPF program bytes and seccomp(2) flags
SeccompProgram = Tuple[bytes, int]
#: state.json's content (``state.Container.data``)
StateData = Dict[str, Any]


class CgroupSet(TypedDict):
    """The container's cgroups as ``cgroups.create`` made them (kept in state.json)."""

    version: str            #: "v1" or "v2"
    leaves: List[str]       #: the directories the container's processes are placed in
    created: List[str]      #: the directories we made, to remove on delete
    controllers: List[str]  #: v1: the controller of each leaf ("" on v2)


class ExecOptions(TypedDict):
    """``exec``'s flags (cli.py)."""

    env: Optional[List[str]]   #: --env K=V, added to process.env
    cwd: Optional[str]
    user: Optional[str]        #: UID[:GID]
    detach: bool
    pid_file: Optional[str]
    process: Optional[str]     #: a process.json to run instead of config.json's process
    pass_fds: int              #: --preserve-fds: descriptors from 3 on that the process keeps
    no_new_privs: bool         #: --no-new-privs
    ignore_paused: bool        #: --ignore-paused: exec even into a paused container
    additional_gids: Optional[List[int]]
    cap: Optional[List[str]]   #: --cap CAP_X: added to the bounding, effective and permitted sets
    apparmor: Optional[str]    #: --apparmor PROFILE, instead of process.apparmorProfile
    process_label: Optional[str]  #: --process-label LABEL, instead of process.selinuxLabel


class Launch(TypedDict):
    """What the caller of create/run handed over beyond the bundle (cli.py)."""

    pass_fds: int    #: descriptors from 3 on that reach the container (LISTEN_FDS + --preserve-fds)
    listen_fds: int  #: of which systemd socket activation's (LISTEN_FDS, LISTEN_PID = us)
    console_socket: Optional[str]  #: --console-socket: where the pty master goes (process.terminal)
    detach: bool     #: create, or run --detach: no runtime stays to relay a terminal


class Progress(TypedDict, total=False):
    """Where ``process.finish`` says which step is under way (for error messages)."""

    step: str


class InitContext(Progress, total=False):
    """What the runtime hands its cloned init (a dict: the init is a fork, nothing is sent)."""

    config: Config
    bundle: str
    disabled: Switches
    nss: Namespaces
    seccomp: Optional[SeccompProgram]  #: the filter, as ``C`` brings it (spawn._seccomp_frame)
    cgroups: CgroupSet
    cgroup_fds: List[int]            #: v1: the cgroups' ``tasks`` files, for the init to join itself
    pass_fds: int                    #: descriptors from 3 on that the container keeps
    mntns: bool
    userns: bool
    cgroupns: bool
    join_fds: Dict[str, int]         #: namespaces to setns into (not pid/time: the runtime did those)
    from_parent: int                 #: pipe ends of the handshake (see init.py)
    to_parent: Optional[int]         #: None once the init has reported ready
    fifo_dir: Optional[int]          #: the state directory, to open exec.fifo in (None: no fifo)
    hooks_before_pivot: bool
    hook_state: Dict[str, Any]
    console_fd: Optional[int]        #: connected to --console-socket (process.terminal), else None
    # written by the init itself (and "step", from Progress)
    in_cgroups: bool                 #: we are in our cgroups and their limits are written (``C``)
