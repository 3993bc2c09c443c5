"""``python -m dativo_bridge.testkit test-plugin ...``: the testkit's commands without the
``dativo`` CLI (which adds the same command objects)."""

from __future__ import annotations

import click

from dativo_bridge.testkit.cli import test_plugin
from dativo_bridge.testkit.scaffold import init


@click.group()
def main() -> None:
    """Dativo's conformance suite for readers and writers."""


main.add_command(test_plugin)
main.add_command(init)

if __name__ == "__main__":
    main()
