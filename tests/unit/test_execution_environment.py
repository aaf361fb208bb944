"""execution-environment.yml (ansible-builder v3) resolves into a build context with the collection tarball that
`make collection` builds, the collection's Python libraries (requirements.txt) and system programs (bindep.txt).
Building the image itself needs a Python 3.12 base image (`make ee`), which this test does not pull."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def test_ee_requirements_name_the_collection_tarball_of_this_version():
    with open(os.path.join(REPO, "galaxy.yml"), encoding="utf-8") as fh:
        galaxy = yaml.safe_load(fh)
    with open(os.path.join(REPO, "ee", "requirements.yml"), encoding="utf-8") as fh:
        reqs = yaml.safe_load(fh)
    want = "kiln-flatcar-%s.tar.gz" % galaxy["version"]
    assert [os.path.basename(c["name"]) for c in reqs["collections"]] == [want], "update ee/requirements.yml to " + want


def test_builder_creates_the_context(tmp_path):
    builder = shutil.which("ansible-builder", path=BIN)
    if builder is None:
        pytest.skip("ansible-builder is not installed in the venv: make venv")
    galaxy_dir = tmp_path / "repo" / "build" / "galaxy"
    shutil.copytree(REPO, tmp_path / "repo", ignore=shutil.ignore_patterns(".git", ".venv", "build", "tests", "*.egg-info", "__pycache__"))
    out = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(galaxy_dir), str(tmp_path / "repo")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    ctx = tmp_path / "ctx"
    out = subprocess.run([builder, "create", "-f", "execution-environment.yml", "-c", str(ctx), "--output-filename", "Containerfile"],
                         cwd=tmp_path / "repo", capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    containerfile = (ctx / "Containerfile").read_text()
    assert "kiln-ee-base:local" in containerfile and "ansible-galaxy collection list kiln.flatcar" in containerfile
    assert sorted(p.name for p in (ctx / "_build" / "collections").iterdir()) == [p.name for p in galaxy_dir.iterdir()]
    pyreqs = (ctx / "_build" / "requirements.txt").read_text().split()
    assert "jmespath" in pyreqs and "docker" in pyreqs
    assert "openssh-client" in (ctx / "_build" / "bindep.txt").read_text()
