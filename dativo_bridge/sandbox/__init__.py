"""Run other people's plugins under a policy, with no daemon, as root or not.

The layers (``docs/sandbox.md``): a user namespace and a loopback-only network namespace
(``namespaces``), Landlock filesystem, TCP and scope rules (``landlock``), rlimits and
no_new_privs (``limits``), and a supervisor that watches the whole process tree's memory,
CPU, task count and wall clock (``watchdog``, ``launcher``) and stops it on a breach.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dativo_bridge.sandbox.launcher import Outcome, supervise
    from dativo_bridge.sandbox.policy import Policy

#: Where each export lives; imported on first use (PEP 562), so that a module that only
#: needs ``sandbox.plugins`` or ``sandbox.policy`` (dativo_bridge.foreign, so every
#: ``dativo run``) does not import the launcher and its layers.
_EXPORTS = {
    "Outcome": "dativo_bridge.sandbox.launcher",
    "supervise": "dativo_bridge.sandbox.launcher",
    "Policy": "dativo_bridge.sandbox.policy",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["Outcome", "Policy", "check_layers", "supervise"]


def check_layers(*, network: bool = False) -> str:
    """Which layers are active on this machine, as printed by ``dativo sandbox --check``:
    a probe child enters every layer (with a process limit) and exits."""
    from dativo_bridge.sandbox import landlock
    from dativo_bridge.sandbox.launcher import supervise
    from dativo_bridge.sandbox.policy import Policy

    # Limits high enough never to bind, so that the probe makes the run's cgroups too.
    probe = Policy(command=[sys.executable], network=network, max_processes=1024, memory_mb=1 << 20)
    outcome = supervise(probe, probe=True)
    report = outcome.report
    lines = [f"uid {os.getuid()}, Landlock ABI {landlock.abi()}"]
    if report is not None:
        for layer, detail in report.active.items():
            lines.append(f"  active       {layer}: {detail}")
        for layer, why in report.missing.items():
            lines.append(f"  unavailable  {layer}: {why}")
        for layer, why in report.unused.items():
            lines.append(f"  not used     {layer}: {why}")
    lines.append("  active       rlimits: CPU, file size, open files, core dumps")
    lines.append("  active       watchdog: memory, CPU, processes and wall clock of the tree")
    return "\n".join(lines) + "\n"
