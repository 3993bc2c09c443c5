"""The isolation layers, entered by the forked child just before it executes the command.

Each layer is tried in turn; what the machine does not offer is recorded as a ``Missing``
(layer name and the kernel's reason) instead of raised, so the supervisor can refuse
(level strict) or warn once (best-effort). Order matters: the user namespace comes first
(it grants the rights the network namespace needs, and makes the process limit count only
this sandbox's tasks), Landlock last (after it, the child could not read what it needs to
set up the rest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dativo_bridge.sandbox import landlock, limits, namespaces, seccomp
from dativo_bridge.sandbox.cgroup import RunCgroup
from dativo_bridge.sandbox.policy import DEVICES_RO, DEVICES_RW, Policy

USER_NS = "user namespace"
NET_NS = "network namespace"
LANDLOCK_FS = "landlock filesystem"
LANDLOCK_NET = "landlock network"
LANDLOCK_SCOPE = "landlock scopes"
NO_NEW_PRIVS = "no_new_privs"
PROCESS_LIMIT = "process limit"
NETWORK = "network isolation"
SECCOMP_NET = "seccomp network"
SHM = "private /dev/shm"
#: /dev/shm's size without a memory limit (Docker's default), and its share of one.
SHM_DEFAULT_MB = 64
SHM_SHARE = 4
CGROUP = "cgroup"


@dataclass
class Plan:
    """What the child needs, computed by the supervisor before the fork."""

    executable: str
    env: dict[str, str]
    readable: list[str]
    writable: list[str]
    cgroup: RunCgroup | None = None
    #: Descriptors the command line names (``/dev/fd/N``), kept open across the exec.
    keep_fds: tuple[int, ...] = ()


@dataclass
class Report:
    active: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    #: Layers not used, and why, that other layers stand in for (shown by --check).
    unused: dict[str, str] = field(default_factory=dict)


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def enter(policy: Policy, plan: Plan) -> Report:
    """Enter every layer the policy asks for that this machine offers (in this process)."""
    report = Report()
    in_pids_cgroup = False
    if plan.cgroup is not None and plan.cgroup.dirs:
        try:
            plan.cgroup.join()
            in_pids_cgroup = "pids" in plan.cgroup.dirs
            report.active[CGROUP] = plan.cgroup.describe()
        except OSError as exc:
            report.missing[CGROUP] = _reason(exc)
    elif plan.cgroup is not None and plan.cgroup.errors:
        report.unused[CGROUP] = (
            "; ".join(f"{k}: {v}" for k, v in plan.cgroup.errors.items())
            + " (the watchdog and rlimits bound memory and processes instead)"
        )
    userns = False
    try:
        namespaces.enter_user_namespace()
        userns = True
        report.active[USER_NS] = f"uid {os.getuid()} mapped to itself, no host capabilities"
    except OSError as exc:
        report.missing[USER_NS] = _reason(exc)

    netns = False
    if not policy.network:
        try:
            namespaces.enter_network_namespace()
            netns = True
            report.active[NET_NS] = "loopback only"
        except OSError as exc:
            report.missing[NET_NS] = _reason(exc)

    writable = list(plan.writable)
    size_mb = shm_size_mb(policy)
    if any(os.path.realpath(path) == namespaces.SHM for path in writable):
        report.unused[SHM] = f"--writable {namespaces.SHM} shares the host's"
    else:
        try:
            namespaces.enter_private_shm(size_mb)
            writable.append(namespaces.SHM)
            report.active[SHM] = "an empty tmpfs: a quarter of the memory limit, else 64 MB"
        except OSError as exc:
            # Not a hole: /dev/shm then stays unwritable (Landlock), so only a plugin that
            # needs shared memory (multiprocessing) is affected. Hence not a missing layer.
            report.unused[SHM] = f"{_reason(exc)} (/dev/shm is not writable)"

    limits.apply_rlimits(
        cpu_seconds=policy.cpu_seconds,
        max_file_mb=policy.max_file_mb,
        max_processes=policy.max_processes,
        max_open_files=policy.max_open_files,
    )
    if policy.max_processes is not None:
        if in_pids_cgroup:
            report.active[PROCESS_LIMIT] = "the run's pids cgroup"
        elif os.getuid() != 0:
            report.active[PROCESS_LIMIT] = (
                "RLIMIT_NPROC, counted in this sandbox's user namespace"
                if userns
                else "RLIMIT_NPROC, counted over all of this user's processes"
            )
        else:
            report.missing[PROCESS_LIMIT] = "RLIMIT_NPROC never binds root and no pids cgroup"

    try:
        limits.no_new_privs()
        report.active[NO_NEW_PRIVS] = "no setuid or file-capability gains"
    except OSError as exc:
        report.missing[NO_NEW_PRIVS] = _reason(exc)

    version = landlock.abi()
    deny_tcp = not policy.network and not netns
    if version <= 0:
        report.missing[LANDLOCK_FS] = "Landlock is not available on this kernel"
    else:
        try:
            ruleset = landlock.Ruleset(version, deny_tcp=deny_tcp, scoped=True)
            ruleset.allow_all(plan.readable, landlock.READ)
            ruleset.allow_all(DEVICES_RW, landlock.DEVICE)
            ruleset.allow_all(DEVICES_RO, landlock.READ_FILE)
            ruleset.allow_all(writable, ruleset.handled_fs)
            ruleset.enforce()
            report.active[LANDLOCK_FS] = f"ABI {version}"
            if ruleset.scoped:
                report.active[LANDLOCK_SCOPE] = "signals and abstract unix sockets stay inside"
            else:
                report.missing[LANDLOCK_SCOPE] = f"needs Landlock ABI 6, this kernel has {version}"
            if ruleset.denies_tcp:
                report.active[LANDLOCK_NET] = "TCP bind and connect denied"
        except OSError as exc:
            report.missing[LANDLOCK_FS] = _reason(exc)
    if deny_tcp:
        # Landlock's rules are TCP only: UDP, SCTP and the rest are refused here.
        try:
            seccomp.deny_non_tcp_internet_sockets()
            report.active[SECCOMP_NET] = "internet sockets other than TCP refused"
        except OSError as exc:
            report.missing[SECCOMP_NET] = f"{_reason(exc)} (UDP would reach any host)"
    if LANDLOCK_NET in report.active and NET_NS in report.missing:
        # The fallback the policy allows: TCP is denied instead of unreachable.
        reason = report.missing.pop(NET_NS)
        report.active[LANDLOCK_NET] += f" (instead of a network namespace: {reason})"
    if not policy.network and not netns and LANDLOCK_NET not in report.active:
        report.missing[NETWORK] = "no network namespace and no Landlock TCP rules (ABI 4)"
    return report


def shm_size_mb(policy: Policy) -> int:
    """The private /dev/shm's size: a quarter of the memory limit (its pages are not in
    the watchdog's count), else 64 MB."""
    if policy.memory_mb is None:
        return SHM_DEFAULT_MB
    return max(policy.memory_mb // SHM_SHARE, 1)
