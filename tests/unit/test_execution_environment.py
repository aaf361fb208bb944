"""execution-environment.yml (ansible-builder v3) resolves into a build context with the collection tarball that
`make collection` builds, the collection's Python libraries (requirements.txt) and system programs (bindep.txt),
for the locally built base (hack/build-ee-base.sh: Debian's /usr/bin/python3, apt-get behind kiln-ee-pkgmgr).
Building and running the image: tests/integration/test_execution_environment.py."""

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
    # the base image's interpreter and package manager (hack/build-ee-base.sh), no ensurepip on Debian's python
    assert 'ARG PYCMD="/usr/bin/python3"' in containerfile
    assert 'ARG PKGMGR="/usr/local/bin/kiln-ee-pkgmgr"' in containerfile
    assert "/output/scripts/pip_install" not in containerfile


def test_base_image_script_provides_what_the_definition_names():
    with open(os.path.join(REPO, "execution-environment.yml"), encoding="utf-8") as fh:
        ee = yaml.safe_load(fh)
    with open(os.path.join(REPO, "hack", "build-ee-base.sh"), encoding="utf-8") as fh:
        script = fh.read()
    assert ee["images"]["base_image"]["name"] == "kiln-ee-base:local" and "image=kiln-ee-base:local" in script
    assert ee["options"]["package_manager_path"] == "/usr/local/bin/kiln-ee-pkgmgr"
    assert '"${rootfs}/usr/local/bin/kiln-ee-pkgmgr"' in script
    assert ee["dependencies"]["python_interpreter"]["python_path"] == "/usr/bin/python3"
    assert "PIP_BREAK_SYSTEM_PACKAGES=1" in script
    with open(os.path.join(REPO, "bindep.txt"), encoding="utf-8") as fh:
        dpkg = [line.split()[0] for line in fh if "platform:dpkg" in line]
    missing = [p for p in dpkg if p not in script.split("INCLUDE=(", 1)[1].split(")", 1)[0].split()]
    assert not missing, "bindep packages not in the base (apt would fetch them at build time): %s" % missing
    if shutil.which("shellcheck"):
        out = subprocess.run(["shellcheck", os.path.join(REPO, "hack", "build-ee-base.sh")], capture_output=True,
                             text=True, check=False)
        assert out.returncode == 0, out.stdout
