"""``copier update`` on a generated project: the reader template as a git repository with two
tags; a project generated at the first tag, committed and edited by its author, takes the
second tag's change and keeps the author's edit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dativo_bridge.testkit.scaffold import TEMPLATES, create_project

pytest.importorskip("copier")

NEW_LINE = "Run `dativo plugins` to see the reader once installed."


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_copier_update_brings_a_template_change_and_keeps_the_authors_edit(
    tmp_path: Path,
) -> None:
    from copier import run_update

    template = tmp_path / "template"
    shutil.copytree(TEMPLATES / "reader", template)
    _git(template, "init", "-q")
    _git(template, "add", "-A")
    _git(template, "commit", "-q", "-m", "v1")
    _git(template, "tag", "v1")

    project = tmp_path / "tap-weather"
    create_project("reader", "weather", project, template=str(template), vcs_ref="v1")
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "v1"
    assert NEW_LINE not in (project / "README.md").read_text()
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "generated")
    # The author's own work: a source of their own in the reader.
    reader = project / "tap_weather" / "reader.py"
    edited = reader.read_text().replace('f"item {i}"', 'f"station {i}"')
    assert edited != reader.read_text()
    reader.write_text(edited)
    _git(project, "commit", "-q", "-am", "my source")

    # The template's next version: a README line, and another default in the reader
    # (a part of the file the author did not touch).
    readme = template / "project" / "README.md.jinja"
    readme.write_text(readme.read_text() + f"\n{NEW_LINE}\n")
    source = template / "project" / "{{package}}" / "reader.py.jinja"
    assert source.read_text().count('"default": 25,') == 1
    source.write_text(source.read_text().replace('"default": 25,', '"default": 50,'))
    _git(template, "commit", "-q", "-am", "v2")
    _git(template, "tag", "v2")

    run_update(str(project), defaults=True, overwrite=True, quiet=True, unsafe=False)
    assert NEW_LINE in (project / "README.md").read_text()
    merged = reader.read_text()
    assert 'f"station {i}"' in merged  # the author's edit stays
    assert '"default": 50,' in merged and '"default": 25,' not in merged  # merged with it
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "v2"
    assert answers["name"] == "weather"
    status = _git(project, "status", "--porcelain")
    assert status.split() == [
        "M",
        ".copier-answers.yml",
        "M",
        "README.md",
        "M",
        "tap_weather/reader.py",
    ]
