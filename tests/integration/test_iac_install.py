"""Issue 14 item 5: an infrastructure-as-code repository consumes kiln the way its README says: the built
collection tarball pinned in requirements.yml, `ansible-galaxy collection install -r` into the repo's own
collections/ (ansible.cfg points there), the collection's example inventory copied in, then the pipeline
playbook by its collection name: syntax check, task and host listing, and a check-mode run of what can run
without the (example, unreachable) fleet."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from kiln_testlib import REPO, VENV_BIN


def sh(argv, cwd, env, check=True, timeout=300):
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    if check:
        assert res.returncode == 0, (argv, res.stdout[-3000:], res.stderr[-3000:])
    return res


@pytest.fixture(scope="module")
def iac(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iac")
    galaxy = yaml.safe_load(open(os.path.join(REPO, "galaxy.yml")))
    # no collection dependencies to fetch from a galaxy server: the install is offline
    assert not galaxy.get("dependencies"), galaxy.get("dependencies")
    dist = tmp / "dist"
    sh([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(dist), REPO],
       cwd=tmp, env=os.environ.copy())
    tarball = dist / ("kiln-flatcar-%s.tar.gz" % galaxy["version"])
    assert tarball.is_file(), glob.glob(str(dist / "*"))

    repo = tmp / "infra"
    repo.mkdir()
    (repo / "requirements.yml").write_text(yaml.safe_dump({"collections": [
        {"name": str(tarball), "type": "file", "version": galaxy["version"]}]}))
    (repo / "ansible.cfg").write_text(
        "[defaults]\ncollections_path = ./collections\ninventory = ./inventories/example\n"
        "collections_on_ansible_version_mismatch = error\n")
    shutil.copytree(os.path.join(REPO, "inventories", "example"), repo / "inventories" / "example")
    # the controller, as an IaC repo names it next to its fleet (the pipeline's first and last plays run there)
    (repo / "inventories" / "example" / "controller.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    # only the IaC repo's own configuration: not the developer's collections path, config or work tree
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(PATH="%s:%s" % (VENV_BIN, os.environ["PATH"]), ANSIBLE_NOCOLOR="1",
               HOME=str(tmp / "home"), ANSIBLE_LOCAL_TEMP=str(tmp / "home" / "tmp"))
    (tmp / "home").mkdir()
    res = sh([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", "-r", "requirements.yml",
              "-p", "./collections"], cwd=repo, env=env)
    return {"repo": repo, "env": env, "version": galaxy["version"], "install": res}


def test_install_from_requirements_into_the_repo(iac):
    installed = iac["repo"] / "collections" / "ansible_collections" / "kiln" / "flatcar"
    manifest = json.loads((installed / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["namespace"] == "kiln"
    assert manifest["collection_info"]["name"] == "flatcar"
    assert manifest["collection_info"]["version"] == iac["version"]
    # ansible finds exactly that copy through the repo's ansible.cfg
    res = sh([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "list", "kiln.flatcar", "--format", "json"],
             cwd=iac["repo"], env=iac["env"])
    found = json.loads(res.stdout)
    assert list(found) == [str(iac["repo"] / "collections" / "ansible_collections")], found
    assert found[str(iac["repo"] / "collections" / "ansible_collections")]["kiln.flatcar"]["version"] == iac["version"]


def test_pipeline_by_collection_name_against_the_example_inventory(iac):
    pb = [os.path.join(VENV_BIN, "ansible-playbook"), "kiln.flatcar.pipeline"]
    sh(pb + ["--syntax-check"], cwd=iac["repo"], env=iac["env"])
    hosts = sh(pb + ["--list-hosts"], cwd=iac["repo"], env=iac["env"]).stdout
    for h in ("build-amd64-1.example.internal", "build-arm64-1.example.internal", "sign-1.example.internal",
              "cache-1.example.internal"):
        assert h in hosts
    tasks = sh(pb + ["--list-tasks"], cwd=iac["repo"], env=iac["env"]).stdout
    assert "kiln.flatcar." in tasks or "Apply the builder role" in tasks


def test_check_mode_run_of_the_controller_plays(iac):
    """The example fleet is not reachable from here: the check run is limited to the controller's plays
    (localhost). They run the whole way through, with the installed collection's filters, to the release
    gate, which must refuse to publish with its one line: no builder (limited out) built anything."""
    res = sh([os.path.join(VENV_BIN, "ansible-playbook"), "kiln.flatcar.pipeline", "--check", "--limit", "localhost",
              "-e", "kiln_version=4593.2.5"],
             cwd=iac["repo"], env=iac["env"], check=False)
    out = res.stdout + res.stderr
    assert "PLAY RECAP" in out, out[-3000:]
    assert "Pin the run id and start time" in out
    assert "| amd64-usr | build-amd64-1.example.internal |" in out, out[-3000:]      # kiln_summary_markdown
    gate = re.search(r"required architectures (\S+), (\S+) did not pass; nothing was published", out)
    assert gate and sorted(gate.groups()) == ["amd64-usr", "arm64-usr"], out[-3000:]    # in either order
    assert "Traceback" not in out
    assert res.returncode == 2, out[-3000:]
