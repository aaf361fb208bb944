"""Issue 9, defects 4 and 6, against the stand-in SDK in a real container.

* defect 4: ``image --developer_data`` with a cloud-config inside the checkout reaches build_image as
  the path inside the container (the old code passed the host path, which build_image cannot see);
* defect 6: a build of non-prod image types (here ``sysext``) is added to the newest attempt directory,
  next to its flatcar_production_image_sysext.squashfs, so a later kiln.flatcar.sysext works (the old
  code moved it to a new -a<N+1> holding no squashfs, and build_sysext failed).
"""

from __future__ import annotations

import json
import os

import pytest

from kiln_testlib import REPO, run_module, run_playbook
from standin_sdk import fixture as sdk

SDK_VERSION = "4593.2.5"
TAG = "stable-4593.2.5"
VERSION = "4593.2.5+attempts"
BUILD_YML = os.path.join(REPO, "playbooks", "build.yml")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the stand-in SDK container needs root")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not sdk.dockerd_start():
        pytest.skip("no working docker daemon on this machine")
    base = tmp_path_factory.mktemp("attempts")
    cache = base / "cache"
    sdk.ensure_sdk_image("all", SDK_VERSION, save_dir=str(cache))
    origin = sdk.make_scripts_origin(base / "origin", tags=[TAG])
    yield {"base": base, "cache": str(cache), "origin": origin}
    sdk.remove_containers("flatcar-sdk-all-4593.2.5_os-4593.2.5-attempts")


def record_of(checkout):
    with open(os.path.join(checkout, "__build__", "images", "kiln", "amd64-usr", VERSION, "build-record.json"), encoding="utf-8") as fh:
        return json.load(fh)


def test_developer_data_and_non_prod_types_reuse_the_attempt(env):
    checkout = env["base"] / "scripts"
    run = run_playbook(BUILD_YML, extra_vars={
        "kiln_build_hosts": "localhost", "kiln_scripts_dir": str(checkout), "kiln_scripts_repo": env["origin"], "kiln_ref": TAG,
        "kiln_version": VERSION, "kiln_board": "amd64-usr", "kiln_sdk_source": "cache", "kiln_sdk_cache": env["cache"],
        "kiln_sdk_registry": sdk.STANDIN_REGISTRY, "kiln_vm_formats": [], "kiln_poll_delay": 1})
    assert run.rc == 0, run.stdout[-5000:]
    assert record_of(checkout)["build_dir"] == "images/amd64-usr/developer-%s-a1" % VERSION

    # defect 4: the cloud-config inside the checkout is handed over as its container path
    (checkout / "cloud-config.yaml").write_text("#cloud-config\nhostname: kiln\n")
    common = {"scripts_dir": str(checkout), "board": "amd64-usr", "sdk_registry": sdk.STANDIN_REGISTRY}
    res, _run = run_module("kiln.flatcar.image", dict(common, developer_data=str(checkout / "cloud-config.yaml")))
    assert res.get("changed") and not res.get("failed"), res
    assert res["details"]["attempt"] == 2  # prod again: a new attempt, the first one is kept
    with open(res["log_path"], encoding="utf-8") as fh:
        log = fh.read()
    assert "--developer_data=/mnt/host/source/src/scripts/cloud-config.yaml" in log or \
        "/mnt/host/source/src/scripts/cloud-config.yaml" in log, log[-3000:]
    assert str(checkout / "cloud-config.yaml") not in log.replace("/mnt/host/source/src/scripts/cloud-config.yaml", "")
    build_dir = res["build_dir"]
    assert build_dir.endswith("-a2")

    # defect 6: sysext only -> the same attempt directory, which holds the squashfs build_sysext needs
    res, _run = run_module("kiln.flatcar.image", dict(common, image_types=["sysext"]))
    assert res.get("changed") and not res.get("failed"), res
    assert res["details"]["attempt"] == 2 and res["build_dir"] == build_dir
    assert os.path.isfile(os.path.join(build_dir, "flatcar_production_image_sysext.squashfs"))
    assert not os.path.exists(build_dir[:-1] + "3")
    res, _run = run_module("kiln.flatcar.sysext", dict(common, name="kilntest", packages=["app-containers/docker"]))
    with open(os.path.join(os.path.dirname(res["log_path"]), "sysext_kilntest.log"), encoding="utf-8") as fh:
        log = fh.read()
    # build_sysext found its base in the reused attempt and got to installing (the old code stopped at
    # "sysext base ... is missing"); the user words came after "--"
    assert "sysext base" not in res.get("msg", ""), res
    assert "--squashfs_base=/mnt/host/source/src/build/%s/flatcar_production_image_sysext.squashfs" % os.path.relpath(
        build_dir, os.path.join(str(checkout), "__build__", "images")) in log
    assert "Installing package into sysext image: app-containers/docker" in log, log[-2000:]
    assert res.get("changed") and not res.get("failed"), res
    assert res["sysext"] == os.path.join(build_dir, "kilntest.raw") and os.path.isfile(res["sysext"])
