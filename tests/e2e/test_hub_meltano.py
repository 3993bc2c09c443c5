"""hub/'s definitions pasted into a Meltano project as they are (only pip_url and
executable replaced: the plugins are this Python's console scripts, Dativo not being on
PyPI yet) are accepted by real Meltano and run a pipeline."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from .helpers import REPO, read_parquet_dir, script
from .test_discovery_meltano import meltano  # noqa: F401 - the meltano fixture

HUB = REPO / "hub"


def _meltano(exe: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MELTANO_", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(exe), "--environment", "test", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"meltano {' '.join(args)}:\n{done.stderr[-4000:]}"
    return done


def _pasted(kind: str, name: str, config: dict) -> dict:
    definition = yaml.safe_load((HUB / kind / f"{name}.yml").read_text())
    del definition["pip_url"]
    definition["executable"] = script(name)
    definition["config"] = config
    return definition


def test_pasted_hub_definitions_run_in_meltano(meltano: Path, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "orders.csv").write_bytes((REPO / "demo" / "orders.csv").read_bytes())
    tap = _pasted(
        "extractors",
        "tap-dativo-csv",
        {"files": [{"stream": "orders", "path": "orders.csv", "key_properties": ["id"]}]},
    )
    target = _pasted("loaders", "target-dativo-parquet", {"path": str(tmp_path / "out")})
    project = {
        "version": 1,
        "default_environment": "test",
        "environments": [{"name": "test"}],
        "plugins": {"extractors": [tap], "loaders": [target]},
    }
    (tmp_path / "meltano.yml").write_text(yaml.safe_dump(project, sort_keys=False))
    listed = _meltano(meltano, tmp_path, "config", "list", "--all", "tap-dativo-csv").stdout
    # Meltano knows every setting of the definition, defaults from their `value`.
    for setting in tap["settings"]:
        assert setting["name"] in listed, setting["name"]
    assert "delimiter [env: TAP_DATIVO_CSV_DELIMITER] current value: ','" in listed
    shown = json.loads(_meltano(meltano, tmp_path, "config", "print", "tap-dativo-csv").stdout)
    assert shown["files"] == tap["config"]["files"]
    _meltano(meltano, tmp_path, "run", "tap-dativo-csv", "target-dativo-parquet")
    table = read_parquet_dir(tmp_path / "out" / "orders")
    lines = (REPO / "demo" / "orders.csv").read_text().splitlines()
    assert table.num_rows == len(lines) - 1
