"""`dativo sandbox`: run any command (a tap, a target, anything) under a policy.

Also runnable as ``python -m dativo_bridge.sandbox_cli [OPTIONS] -- COMMAND [ARGS]...``.
"""

from __future__ import annotations

import os
import sys

import click

from dativo_bridge.sandbox import Policy, check_layers, supervise
from dativo_bridge.sandbox.launcher import REFUSED


@click.command(
    "sandbox",
    context_settings={"allow_interspersed_args": False, "help_option_names": ["-h", "--help"]},
)
@click.option("--network/--no-network", default=False, help="Allow the network (default: no).")
@click.option("--memory-mb", type=click.IntRange(1), help="Memory limit of the process tree.")
@click.option("--cpu-seconds", type=click.IntRange(1), help="CPU time limit of the tree.")
@click.option("--wall-seconds", type=click.FloatRange(0, min_open=True), help="Wall-clock limit.")
@click.option("--max-file-mb", type=click.IntRange(1), help="Largest file the command may write.")
@click.option("--max-processes", type=click.IntRange(1), help="Most processes and threads.")
@click.option("--max-open-files", type=click.IntRange(8), help="Most open files per process.")
@click.option("--readable", multiple=True, metavar="PATH", help="Also readable (repeatable).")
@click.option("--writable", multiple=True, metavar="PATH", help="Also writable (repeatable).")
@click.option("--env", "env", multiple=True, metavar="NAME[=VALUE]", help="Pass or set a variable.")
@click.option(
    "--level",
    type=click.Choice(["strict", "best-effort", "off"]),
    default="best-effort",
    show_default=True,
    help="strict refuses when a layer is unavailable; off runs the command as is.",
)
@click.option("--name", help="What messages call the command (default: its program name).")
@click.option("--check", is_flag=True, help="Print which layers are active here, and exit.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def sandbox(
    network: bool,
    memory_mb: int | None,
    cpu_seconds: int | None,
    wall_seconds: float | None,
    max_file_mb: int | None,
    max_processes: int | None,
    max_open_files: int | None,
    readable: tuple[str, ...],
    writable: tuple[str, ...],
    env: tuple[str, ...],
    level: str,
    name: str | None,
    check: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with no network, a scrubbed environment, a read-only view of the
    system and its own installation, a private scratch directory (its TMPDIR and HOME)
    and the given limits. A breached limit stops COMMAND and everything it started,
    prints one line naming the limit, and exits 124.

    \b
    dativo sandbox --memory-mb 256 -- tap-foo --config config.json | target-bar
    """
    if check:
        click.echo(check_layers(network=network), nl=False)
        return
    if not command:
        raise click.UsageError("give the command to run after --")
    for path in (*readable, *writable):
        if not os.path.exists(path):
            raise click.BadParameter(f"{path} does not exist", param_hint="--readable/--writable")
    if level == "off":
        try:
            os.execvp(command[0], list(command))
        except OSError as exc:
            click.echo(f"sandbox: {command[0]}: {exc.strerror}", err=True)
            sys.exit(127)
    policy = Policy(
        command=list(command),
        name=name or "",
        network=network,
        memory_mb=memory_mb,
        cpu_seconds=cpu_seconds,
        wall_seconds=wall_seconds,
        max_file_mb=max_file_mb,
        max_processes=max_processes,
        max_open_files=max_open_files,
        readable=[os.path.abspath(p) for p in readable],
        writable=[os.path.abspath(p) for p in writable],
        env=list(env),
        level=level,
    )
    try:
        outcome = supervise(policy, release_stdio=True)
    except OSError as exc:
        click.echo(f"sandbox: {policy.name}: could not start: {exc}", err=True)
        sys.exit(REFUSED)
    sys.exit(outcome.returncode)


if __name__ == "__main__":
    sandbox(prog_name="dativo sandbox")
