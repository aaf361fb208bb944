"""Issue 9: the preflight. Every SDK stage module reads the scripts checked out in scripts_dir (with the
same parser as hack/sdk-contract.py) and refuses, in seconds and with one line, a build those scripts
do not support, in check mode too and before any container work.

The checkout is a copy of the real flatcar/scripts (vendor) in a temporary git repository tagged
stable-3510.2.0, with one thing taken out (a flag, a VM format, an environment variable). The real
modules run (directly with their JSON args, and through ansible-playbook); ``docker`` on PATH is a
recorder that fails, so any container work would show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from kiln_testlib import COLLECTIONS, VENDOR_SKIP, ensure_collection_path, flatcar_scripts_dir, run_module

TAG = "stable-3510.2.0"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_NOSYSTEM": "1"}


def make_checkout(dest, edit):
    """Vendor flatcar/scripts copied to dest, edited, committed and tagged TAG."""
    import shutil
    vendor = flatcar_scripts_dir()
    if not vendor:
        pytest.skip(VENDOR_SKIP)
    shutil.copytree(vendor, dest, symlinks=True)
    for root, _dirs, files in os.walk(dest):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o200)
    with open(os.path.join(dest, "sdk_container/.repo/manifests/version.txt"), "w", encoding="utf-8") as fh:
        fh.write('FLATCAR_VERSION=3510.2.0\nFLATCAR_VERSION_ID=3510.2.0\nFLATCAR_BUILD_ID=""\nFLATCAR_SDK_VERSION=3510.2.0\n')
    for rel, old, new in edit:
        path = os.path.join(dest, rel)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        assert old in text, (rel, old)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text.replace(old, new))
    env = dict(os.environ, **GIT_ENV)
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", TAG], ["tag", TAG]):
        subprocess.run(["git", "-C", str(dest)] + cmd, check=True, env=env, capture_output=True)
    return str(dest)


@pytest.fixture
def fakebin(tmp_path):
    """A docker that records its calls and fails: the preflight must refuse before any of them."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "docker-calls"
    script = bindir / "docker"
    script.write_text('#!/bin/sh\necho "$@" >> %s\nexit 1\n' % log)
    script.chmod(0o755)
    return {"dir": str(bindir), "log": log}


def run_direct(module, args, check, path_dir):
    """The module as Ansible runs it on the builder: python, JSON args on stdin."""
    ensure_collection_path()
    payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check)}
    env = dict(os.environ, PYTHONPATH=COLLECTIONS, PATH=path_dir + os.pathsep + os.environ.get("PATH", ""))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.kiln.flatcar.plugins.modules." + module],
                          input=json.dumps(payload), capture_output=True, text=True, env=env, check=False, timeout=60)
    elapsed = time.monotonic() - start
    return json.loads(proc.stdout), elapsed


NO_BASE_SYSEXTS = [("build_image", 'DEFINE_string base_sysexts "', 'true "')]
CASES = [
    ("image", {"image_types": ["prod"], "base_sysexts": "containerd-flatcar|app-containers/containerd"}, NO_BASE_SYSEXTS,
     "scripts at stable-3510.2.0 have no build_image --base_sysexts"),
    ("image", {"image_types": ["prod", "sysext"]}, [("build_image", "    sysext) SYSEXT=1 ;;\n", "")],
     "scripts at stable-3510.2.0 have no build_image image type sysext"),
    ("vm_image", {"formats": ["qemu_uefi", "nutanix"]}, [("build_library/vm_image_util.sh", "    nutanix\n", "")],
     "scripts at stable-3510.2.0 have no image_to_vm.sh format nutanix"),
    ("packages", {"environment": {"SIGNER": "kiln@example.invalid"}},
     [("sdk_lib/sdk_container_common.sh", "        SIGNER \\\n", "")],
     "scripts at stable-3510.2.0 have no environment variable SIGNER in sdk_container/.sdkenv"),
    ("packages", {"usepkg": False}, [("build_packages", 'DEFINE_boolean usepkg "', 'true "')],
     "scripts at stable-3510.2.0 have no build_packages --nousepkg"),
    ("sysext", {"name": "htop", "packages": ["sys-process/htop"], "ignore_version_mismatch": True},
     [("build_sysext", 'DEFINE_boolean ignore_version_mismatch "', 'true "')],
     "scripts at stable-3510.2.0 have no build_sysext --ignore_version_mismatch"),
]


@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
@pytest.mark.parametrize("module,args,edit,msg", CASES, ids=[c[3].split(" have no ")[1] for c in CASES])
def test_preflight_refuses_in_one_line_within_seconds(tmp_path, fakebin, module, args, edit, msg, check):
    scripts = make_checkout(tmp_path / "scripts", edit)
    res, elapsed = run_direct(module, dict(args, scripts_dir=scripts, board="amd64-usr"), check, fakebin["dir"])
    assert res.get("failed"), res
    assert res["msg"] == msg
    assert elapsed < 5, elapsed
    assert not fakebin["log"].exists(), fakebin["log"].read_text()  # no container engine call at all
    records = [f for _root, _dirs, files in os.walk(os.path.join(scripts, "__build__")) for f in files if f == "build-record.json"]
    assert records == []  # and no build record
    print("preflight %s %s: %.2fs" % (module, "check" if check else "run", elapsed))


def test_same_checkout_without_the_flag_passes_the_preflight(tmp_path, fakebin):
    """Control: the reduced checkout is fine for a build that does not ask for --base_sysexts."""
    scripts = make_checkout(tmp_path / "scripts", NO_BASE_SYSEXTS)
    res, _elapsed = run_direct("image", {"scripts_dir": scripts, "board": "amd64-usr", "image_types": ["prod"]}, True, fakebin["dir"])
    assert not res.get("failed"), res
    assert res["changed"] and res["stage"] == "image"


def test_unmounted_developer_data_is_refused(tmp_path, fakebin):
    """Defect 4: a cloud-config outside the checkout cannot be seen by build_image in the container."""
    scripts = make_checkout(tmp_path / "scripts", [])
    outside = tmp_path / "cloud.yaml"
    outside.write_text("#cloud-config\n")
    res, _elapsed = run_direct("image", {"scripts_dir": scripts, "board": "amd64-usr", "developer_data": str(outside)}, True, fakebin["dir"])
    assert res.get("failed") and "\n" not in res["msg"]
    assert res["msg"].startswith("developer_data %s is not visible in the SDK container" % outside)


@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
def test_preflight_through_ansible_playbook(tmp_path, fakebin, check):
    scripts = make_checkout(tmp_path / "scripts", NO_BASE_SYSEXTS)
    start = time.monotonic()
    res, _run = run_module("kiln.flatcar.image", {"scripts_dir": scripts, "board": "amd64-usr", "base_sysexts": "a|b/c"}, check=check,
                           task_env={"PATH": fakebin["dir"] + os.pathsep + os.environ.get("PATH", "")}, timeout=120)
    elapsed = time.monotonic() - start
    assert res.get("failed") and res["msg"] == "scripts at stable-3510.2.0 have no build_image --base_sysexts"
    assert not fakebin["log"].exists()
    print("ansible-playbook round trip %.2fs" % elapsed)
    assert elapsed < 15, elapsed  # the whole ansible-playbook run; the module itself is held to 5 s above
