"""A Singer tap for the sandbox tests of ``dativo run``: it reads its config (from wherever
``--config`` points, an in-memory ``/dev/fd/N`` under ``dativo run``), tries to read the
file named by its ``probe_path`` setting and to see ``AWS_SECRET_ACCESS_KEY``, and emits
what happened as records of the stream ``probe``. With ``allocate_mb`` it first holds that
much memory (bounded); it cannot discover."""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    args = sys.argv[1:]
    if "--discover" in args:
        return 1
    with open(args[args.index("--config") + 1]) as fh:
        config = json.load(fh)
    held = [b"x" * (10 << 20) for _ in range(int(config.get("allocate_mb", 0)) // 10)]
    try:
        with open(config["probe_path"]) as fh:
            file_result = "OK " + fh.read().strip()
    except OSError as exc:
        file_result = f"DENIED {exc.errno}"
    env_result = os.environ.get("AWS_SECRET_ACCESS_KEY", "absent")
    schema = {
        "type": "object",
        "properties": {"check": {"type": "string"}, "result": {"type": "string"}},
    }
    lines = [{"type": "SCHEMA", "stream": "probe", "schema": schema, "key_properties": ["check"]}]
    for check, result in (("file", file_result), ("env", env_result), ("held", str(len(held)))):
        lines.append(
            {"type": "RECORD", "stream": "probe", "record": {"check": check, "result": result}}
        )
    lines.append({"type": "STATE", "value": {"done": True}})
    sys.stdout.write("".join(json.dumps(line) + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
