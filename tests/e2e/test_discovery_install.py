"""A separate Meltano project installs Dativo and a user's packaged plugin the way
docs/writing-plugins.md ("In a separate Meltano project") says: its entries as written,
with this clone's path for Dativo, a non-editable install, one `meltano run`."""

from __future__ import annotations

import os
import re
import subprocess
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from .helpers import BIN, REPO, peer_venv, read_parquet_dir


@pytest.fixture(scope="module")
def meltano() -> Path:
    beside = BIN / "meltano"
    return beside if beside.exists() else peer_venv("meltano>=4,<5", "meltano", "uv")


def _meltano(exe: Path, root: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MELTANO_", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(exe), "--environment", "test", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"meltano {' '.join(args)}:\n{done.stderr[-4000:]}"


WEATHER = """
from decimal import Decimal

import pyarrow as pa

from dativo_bridge import ArrowReader, StreamInfo, make_tap


class WeatherReader(ArrowReader):
    name = "tap-weather"
    config_jsonschema = {
        "type": "object",
        "properties": {"station": {"type": "string", "description": "Station code."}},
    }

    def discover(self):
        schema = pa.schema([("station", pa.string()), ("celsius", pa.decimal128(4, 1))])
        return [StreamInfo("readings", schema)]

    def read(self, stream, bookmark=None):
        values = [pa.array([self.config["station"]]), pa.array([Decimal("21.5")], pa.decimal128(4, 1))]
        yield pa.record_batch(values, schema=stream.schema)


TapWeather = make_tap(WeatherReader)
"""


def _doc_blocks(language: str) -> list[str]:
    text = (REPO / "docs" / "writing-plugins.md").read_text()
    section = text.split("### In a separate Meltano project", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_a_separate_meltano_project_installs_dativo_and_a_users_plugin(
    meltano: Path, tmp_path: Path
) -> None:
    """docs/writing-plugins.md's separate-project entries, as written, with the clone's path
    (relative to the project) for /path/to/dativo and for the git URL: a non-editable
    install of Dativo, the user's packaged tap beside it, one `meltano run`."""
    dativo = os.path.relpath(REPO, tmp_path)
    (toml,) = _doc_blocks("toml")
    package = tmp_path / "plugins" / "tap-weather"
    (package / "tap_weather").mkdir(parents=True)
    build = (
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (package / "pyproject.toml").write_text(build + "\n" + toml)
    (package / "tap_weather" / "__init__.py").write_text(WEATHER)
    own, user = (yaml.safe_load(block)["plugins"] for block in _doc_blocks("yaml"))
    (target,) = own["loaders"]
    (tap,) = user["extractors"]
    for plugin in (tap, target):
        plugin["pip_url"] = re.sub(r"/path/to/dativo|git\+\S+", dativo, plugin["pip_url"])
    target["config"] = {"path": "out"}
    data = {
        "version": 1,
        "default_environment": "test",
        "environments": [{"name": "test"}],
        "venv": {"backend": "uv"},
        "plugins": {"extractors": [tap], "loaders": [target]},
    }
    (tmp_path / "meltano.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    _meltano(meltano, tmp_path, "install")
    _meltano(meltano, tmp_path, "run", "tap-weather", "target-dativo-parquet")
    table = read_parquet_dir(tmp_path / "out" / "readings")
    assert table.schema.field("celsius").type == pa.decimal128(4, 1)
    assert table.to_pylist() == [{"station": "OSL", "celsius": Decimal("21.5")}]
