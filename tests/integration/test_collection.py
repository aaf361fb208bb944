"""Issue 2 item 1: the collection builds into a tarball that installs, and ansible-doc works for
every module and plugin from the installed copy; the action group names every module."""

from __future__ import annotations

import glob
import os
import subprocess

import yaml

from kiln_testlib import REPO, VENV_BIN


def test_build_install_and_doc(tmp_path):
    out = tmp_path / "dist"
    subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(out), REPO],
                   check=True, capture_output=True, text=True)
    tarballs = glob.glob(str(out / "kiln-flatcar-*.tar.gz"))
    assert len(tarballs) == 1
    dest = tmp_path / "collections"
    # only the new path: the work tree is on the developer's collections path and would count as installed
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(dest))
    subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", "-p", str(dest), tarballs[0]],
                   check=True, capture_output=True, text=True, env=env)
    installed = dest / "ansible_collections" / "kiln" / "flatcar"
    assert (installed / "MANIFEST.json").is_file()
    for unwanted in (".ci", "build", ".venv", ".git"):
        assert not (installed / unwanted).exists(), unwanted
    assert os.path.getsize(tarballs[0]) < 20 * 1024 * 1024
    modules = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "plugins", "modules", "*.py")))
    for name in modules:
        proc = subprocess.run([os.path.join(VENV_BIN, "ansible-doc"), "--json", "kiln.flatcar." + name],
                              env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
        assert "kiln.flatcar." + name in proc.stdout
    runtime = yaml.safe_load(open(os.path.join(REPO, "meta", "runtime.yml"), encoding="utf-8"))
    assert sorted(runtime["action_groups"]["flatcar"]) == modules
