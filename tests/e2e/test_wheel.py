"""`pip install dativo` from the built distributions, not the checkout.

Once per session ``python -m build`` makes the sdist and, from that sdist (so a file the
sdist lacks is missing from the wheel too), the wheel. The wheel goes into a venv without
the system site-packages (the editable checkout installed there must not be seen), whose
dependencies come from PyPI once and are cached under .dativo/test-venvs, keyed by the
wheel's Requires-Dist; each session reinstalls only the wheel. The README's demo then runs
from a directory outside the checkout with that venv's console scripts.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from .helpers import REPO, read_parquet_dir

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
PLUGINS = sorted(PYPROJECT["project"]["entry-points"]["dativo.plugins"])
CRATE = tomllib.loads((REPO / "rust_accel" / "pyproject.toml").read_text())["project"]
CPYTHON = f"cp{sys.version_info.major}{sys.version_info.minor}"
#: Imported as the first thing of the extension's own code (PYTHONPROFILEIMPORTTIME lines).
ACCEL_IMPORT = re.compile(r"^import time:.*\| +dativo_accel\._core$", re.MULTILINE)


def _run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 900
):
    done = subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done


def _build_wheels(out: Path, *args: str) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "CARGO_BUILD_JOBS": "2"}
    script = str(REPO / "scripts" / "build_wheels.sh")
    _run("bash", script, "--out", str(out), *args, env=env, timeout=1800)


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    _build_wheels(out, "dativo")
    (sdist,) = out.glob("dativo-*.tar.gz")
    (wheel,) = out.glob("dativo-*.whl")
    return {"sdist": sdist, "wheel": wheel}


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    return sorted(metadata.get_all("Requires-Dist") or [])


@pytest.fixture(scope="session")
def installed(dists: dict[str, Path]) -> Path:
    """The bin directory of a venv with the wheel installed (and nothing of the checkout)."""
    wheel = dists["wheel"]
    key = hashlib.sha256("\n".join(_requirements(wheel)).encode()).hexdigest()[:16]
    home = REPO / ".dativo" / "test-venvs" / f"dativo-wheel-{key}"
    home.parent.mkdir(parents=True, exist_ok=True)
    python = home / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    with open(home.parent / f"dativo-wheel-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions share the venv
        ready = home / ".dependencies-installed"
        if not ready.exists():
            venv.create(home, with_pip=True, clear=True, system_site_packages=False)
            _run(*pip, str(wheel))  # the dependencies from PyPI (pip's cache after once)
            ready.write_text(key)
        _run(*pip, "--no-deps", "--force-reinstall", str(wheel))
    return home / "bin"


@pytest.fixture(scope="session", params=["native", "zig"])
def accel_wheel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dativo-accel's wheel for this Python: linked against this host's glibc (sharing
    rust_accel/target with scripts/test.sh's build), or through zig for manylinux_2_28 (the
    default of scripts/build_wheels.sh: its own cargo target under .dativo/, about five
    minutes to build cold, so only with DATIVO_TEST_ZIG_WHEEL=1)."""
    if request.param == "zig" and os.environ.get("DATIVO_TEST_ZIG_WHEEL") != "1":
        pytest.skip("the zig (manylinux_2_28) build runs with DATIVO_TEST_ZIG_WHEEL=1")
    out = tmp_path_factory.mktemp(f"accel-{request.param}")
    _build_wheels(out, *(["--native"] if request.param == "native" else []), "accel")
    (wheel,) = out.glob("dativo_accel-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed_accel(installed: Path, dists: dict[str, Path], accel_wheel: Path) -> Path:
    """The bin directory of a venv with the dativo wheel and the dativo-accel wheel; its
    other dependencies are the wheel venv's (a .pth file puts that venv's site-packages
    after its own, so what is installed here comes first)."""
    home = installed.parent.parent / f"{installed.parent.name}-accel"
    python = home / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    with open(home.parent / f"{home.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not python.exists():
            venv.create(home, with_pip=True, clear=True, system_site_packages=False)
        site = "import sysconfig; print(sysconfig.get_path('purelib'))"
        deps = _run(str(installed / "python"), "-c", site).stdout.strip()
        own = Path(_run(str(python), "-c", site).stdout.strip())
        (own / "_dativo_wheel_dependencies.pth").write_text(deps + "\n")
        _run(*pip, "--no-deps", "--no-index", "--force-reinstall", str(dists["wheel"]))
        _run(*pip, "--no-deps", "--no-index", "--force-reinstall", str(accel_wheel))
    return home / "bin"


def _env(bin_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("MELTANO_")
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def _source_packages() -> list[str]:
    """Every package in the source tree, as its path inside a wheel (the plugin packages
    without their taps/ or targets/ folder); the dativo init templates are data."""
    found = []
    for root, strip in (
        (REPO / "dativo_bridge", REPO),
        (REPO / "taps", REPO / "taps"),
        (REPO / "targets", REPO / "targets"),
    ):
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(strip).as_posix()
            if "/templates" not in relative and "__pycache__" not in relative:
                found.append(relative)
    assert len(found) > 10
    return sorted(found)


def test_the_sdist_holds_what_a_wheel_is_built_from(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    for needed in (
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "taps/tap_dativo_csv/reader.py",
        "targets/target_dativo_parquet/writer.py",
        "dativo_bridge/testkit/templates/reader/copier.yml",
        "dativo_bridge/py.typed",
    ):
        assert needed in names, f"the sdist lacks {needed}"
    assert not any(n.startswith(("tests/", "rust_accel/", "bench/")) for n in names)


def test_the_wheel_holds_every_package_and_entry_point(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as archive:
        names = set(archive.namelist())
        info = f"dativo-{VERSION}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    for package in _source_packages():
        assert f"{package}/__init__.py" in names, f"the wheel lacks the package {package}"
    assert "dativo_bridge/testkit/templates/writer/project/{{package}}/writer.py.jinja" in names
    for plugin in PLUGINS:
        assert f"\n{plugin} = " in entry_points
    assert not any(n.startswith(("tests/", "taps/", "targets/")) for n in names)


def test_versions_come_from_pyproject(installed: Path, tmp_path: Path) -> None:
    env = _env(installed)
    where = _run(
        "python",
        "-c",
        "import dativo_bridge, tap_dativo_csv; print(dativo_bridge.__file__)",
        cwd=tmp_path,
        env=env,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.parent), where
    assert not Path(where).resolve().is_relative_to(REPO.resolve() / "dativo_bridge")
    assert _run("dativo", "--version", cwd=tmp_path, env=env).stdout.strip() == (
        f"dativo, version {VERSION}"
    )
    for plugin in PLUGINS:
        about = json.loads(
            _run(plugin, "--about", "--format", "json", cwd=tmp_path, env=env).stdout
        )
        assert (about["name"], about["version"]) == (plugin, VERSION)
    listing = json.loads(
        _run("python", "-m", "dativo_bridge.plugins_cli", "--json", cwd=tmp_path, env=env).stdout
    )
    assert listing["dativo_version"] == VERSION
    assert listing["accelerator_version"] is None  # dativo[accel] was not asked for
    rows = {row["name"]: row for row in listing["plugins"]}
    assert sorted(rows) == PLUGINS
    assert all(row["status"] == "ok" and row["version"] == VERSION for row in rows.values())


def test_the_readme_demo_runs_against_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    stderr = _run_the_readme_demo(installed, tmp_path)
    assert not ACCEL_IMPORT.search(stderr)  # the pure-Python paths ran


def _run_the_readme_demo(bin_dir: Path, tmp_path: Path) -> str:
    """Run the README's demo (the shell pipe, then `dativo run`) with `bin_dir`'s console
    scripts, check the Parquet files; returns the runs' stderr with Python's import-time
    lines (PYTHONPROFILEIMPORTTIME), which name every module each process imported."""
    env = {**_env(bin_dir), "PYTHONPROFILEIMPORTTIME": "1"}
    (tmp_path / "demo").mkdir()
    shutil.copy2(REPO / "demo" / "orders.csv", tmp_path / "demo" / "orders.csv")
    with open(REPO / "demo" / "orders.csv", newline="") as fh:
        ids = sorted(int(row["id"]) for row in csv.DictReader(fh))
    assert ids
    tap = {"files": [{"stream": "orders", "path": "demo/orders.csv", "key_properties": ["id"]}]}
    (tmp_path / "tap.json").write_text(json.dumps(tap))
    (tmp_path / "target.json").write_text(json.dumps({"path": "output/pipe"}))
    pipe = _run(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        "tap-dativo-csv --config tap.json | target-dativo-parquet --config target.json",
        cwd=tmp_path,
        env=env,
    )
    piped = read_parquet_dir(tmp_path / "output" / "pipe" / "orders")
    assert sorted(piped.column("id").to_pylist()) == ids
    (tmp_path / "meltano.yml").write_text(
        json.dumps(
            {
                "version": 1,
                "default_environment": "dev",
                "environments": [{"name": "dev"}],
                "plugins": {
                    "extractors": [{"name": "tap-dativo-csv", "config": tap}],
                    "loaders": [
                        {"name": "target-dativo-parquet", "config": {"path": "output/run"}}
                    ],
                },
            }
        )
    )
    done = _run(
        "dativo",
        "run",
        "tap-dativo-csv",
        "target-dativo-parquet",
        "--json",
        cwd=tmp_path,
        env=env,
    )
    summary = json.loads(done.stdout)
    assert summary["rows"] == len(ids), summary
    ran = read_parquet_dir(tmp_path / "output" / "run" / "orders")
    assert sorted(ran.column("id").to_pylist()) == ids
    assert ran.schema == piped.schema
    return pipe.stderr + done.stderr


@pytest.mark.timeout(1800)  # a cold cargo build of the crate is minutes
def test_the_accel_extra_resolves_to_the_crates_wheel(
    installed: Path, dists: dict[str, Path], accel_wheel: Path, tmp_path: Path
) -> None:
    """`dativo[accel]` with --find-links to the built dativo-accel wheel picks that wheel
    (a dry run: the wheel environment keeps the pure-Python paths)."""
    report = tmp_path / "report.json"
    _run(
        str(installed / "python"),
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--quiet",
        "--disable-pip-version-check",
        "--no-index",
        "--find-links",
        str(accel_wheel.parent),
        "--report",
        str(report),
        f"dativo[accel] @ {dists['wheel'].as_uri()}",
        cwd=tmp_path,
        env=_env(installed),
    )
    chosen = [
        (item["metadata"]["name"], item["metadata"]["version"])
        for item in json.loads(report.read_text())["install"]
    ]
    assert (CRATE["name"], CRATE["version"]) in chosen, chosen


def _wheel_tags(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/WHEEL"))
        metadata = Parser().parsestr(archive.read(name).decode())
    return metadata.get_all("Tag") or []


@pytest.mark.timeout(1800)  # a cold cargo build of the crate is minutes
def test_the_accel_wheel_is_manylinux_as_auditwheel_finds(accel_wheel: Path) -> None:
    (tag,) = _wheel_tags(accel_wheel)
    found = re.fullmatch(rf"{CPYTHON}-{CPYTHON}-manylinux_2_(\d+)_x86_64", tag)
    assert found, tag
    if accel_wheel.parent.name.startswith("accel-zig"):
        assert int(found[1]) == 28, tag
    else:  # linked against this host's glibc: no newer than it
        glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
        assert int(found[1]) <= int(glibc.split(".")[1]), (tag, glibc)
    assert accel_wheel.name.endswith(f"-{tag}.whl"), accel_wheel.name
    shown = _run(sys.executable, "-m", "auditwheel", "show", str(accel_wheel)).stdout
    platform = tag.split("-")[2]
    assert f'consistent with the following platform tag: "{platform}"' in " ".join(shown.split()), (
        shown
    )


@pytest.mark.timeout(1800)  # a cold cargo build of the crate is minutes
def test_the_readme_demo_runs_with_the_installed_accel_wheel(
    installed_accel: Path, tmp_path: Path
) -> None:
    env = _env(installed_accel)
    probe = (
        "import json, dativo_accel\n"
        "from dativo_bridge.codecs.encode import _rust_encode_records as f\n"
        "print(json.dumps([dativo_accel.__file__, f.__module__, f.__name__]))"
    )
    where, module, name = json.loads(_run("python", "-c", probe, cwd=tmp_path, env=env).stdout)
    assert Path(where).is_relative_to(installed_accel.parent), where
    assert (module, name) == ("dativo_accel._core", "encode_records")
    listing = json.loads(
        _run("python", "-m", "dativo_bridge.plugins_cli", "--json", cwd=tmp_path, env=env).stdout
    )
    assert listing["accelerator_version"] == CRATE["version"]
    stderr = _run_the_readme_demo(installed_accel, tmp_path)
    # The tap, the target and `dativo run`: each process loaded the extension.
    assert len(ACCEL_IMPORT.findall(stderr)) == 3, stderr[-4000:]
