"""Issue 9 (defects 3, 5 and 8): kiln's modules against the stand-in SDK in a real container, where the stand-in
regenerates make.conf exactly like the real setup_board/build_packages and runs a real sudo configured with the real
sdk_lib/90_env_keep.

* defect 3: the fleet's binary package cache (sdk_checkout binhost -> FLATCAR_DEV_BUILDS in version.txt, packages
  binhost -> --getbinpkgver) is in PORTAGE_BINHOST of the make.conf that build_packages and build_image use;
  a binhost that cannot reach portage fails with one line instead of being dropped silently.
* defect 8: the channel parsed at checkout (stable) is the channel of the build record.
* defect 5: kiln.flatcar.sysext runs build_sysext with ``sudo -E`` so SYSEXT_SIGNING_KEY_DIR (not in 90_env_keep)
  reaches it.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from kiln_testlib import run_module
from standin_sdk import fixture as sdk

SDK_VERSION = "4593.2.5"
TAG = "stable-4593.2.5"
BOARD = "amd64-usr"
ROOT = "http://cache.kiln.invalid:8080/kiln"
VERSION = "4593.2.5+bhtest"
CONTAINER = "kiln-binhost-test"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the stand-in SDK container needs root")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not sdk.dockerd_start():
        pytest.skip("no working docker daemon on this machine")
    base = tmp_path_factory.mktemp("binhost")
    sdk.ensure_sdk_image("all", SDK_VERSION)
    origin = sdk.make_scripts_origin(base / "origin", tags=[TAG])
    checkout = base / "scripts"
    sdk.remove_containers(CONTAINER)
    # the tag gives the channel; the build id is pinned; the cache root becomes FLATCAR_DEV_BUILDS
    res, _run = run_module("kiln.flatcar.sdk_checkout", {"dest": str(checkout), "repo": origin, "ref": TAG,
                                                         "build_id": "bhtest", "binhost": ROOT + "/"})
    assert res.get("changed"), res
    yield {"checkout": checkout, "checkout_result": res}
    sdk.remove_containers(CONTAINER)


def stage_args(checkout, **extra):
    args = {"scripts_dir": str(checkout), "board": BOARD, "container_name": CONTAINER, "sdk_registry": sdk.STANDIN_REGISTRY}
    args.update(extra)
    return args


def make_conf():
    out = subprocess.run(["docker", "exec", CONTAINER, "cat", "/build/%s/etc/portage/make.conf" % BOARD],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        subprocess.run(["docker", "start", CONTAINER], capture_output=True, check=True)
        out = subprocess.run(["docker", "exec", CONTAINER, "cat", "/build/%s/etc/portage/make.conf" % BOARD],
                             capture_output=True, text=True, check=True)
        subprocess.run(["docker", "stop", "-t", "0", CONTAINER], capture_output=True, check=False)
    (binhost,) = re.findall(r'^PORTAGE_BINHOST="([^"]*)"$', out.stdout, re.M)
    return binhost.split()


def record(checkout):
    import json
    path = os.path.join(checkout, "__build__", "images", "kiln", BOARD, VERSION, "build-record.json")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def test_versionfile_carries_the_cache_root_quoted(built):
    text = (built["checkout"] / "sdk_container/.repo/manifests/version.txt").read_text()
    assert 'FLATCAR_DEV_BUILDS="%s"\n' % ROOT in text
    assert built["checkout_result"]["version"]["channel"] == "stable"


def test_cache_binhost_reaches_portage_and_channel_is_kept(built):
    checkout = built["checkout"]
    url = "%s/boards/%s/%s/pkgs/" % (ROOT, BOARD, VERSION)  # what binpkg_cache mode=pull returns
    res, _run = run_module("kiln.flatcar.packages", stage_args(checkout, binhost=[url]))
    assert res.get("changed") and not res.get("failed"), res.get("msg")
    # build_packages regenerated make.conf itself (setup_board --regen_configs, no --binhost) and the cache is in it
    assert make_conf() == [url]
    assert res["version"]["channel"] == "stable"
    assert record(checkout)["version"]["channel"] == "stable"

    res, _run = run_module("kiln.flatcar.image", stage_args(checkout, image_types=["prod"]))
    assert res.get("changed") and not res.get("failed"), res.get("msg")
    assert make_conf() == [url]  # the make.conf build_image read (board_options.sh) still points at the cache


def test_binhost_outside_flatcar_dev_builds_fails_in_one_line(built):
    res, _run = run_module("kiln.flatcar.packages", stage_args(built["checkout"], binhost=[
        "http://elsewhere.invalid/boards/%s/%s/pkgs/" % (BOARD, VERSION)]))
    assert res.get("failed") and "\n" not in res["msg"], res
    assert "cannot reach portage" in res["msg"] and "binhost=http://elsewhere.invalid" in res["msg"]


def test_sysext_gets_its_signing_key_dir_through_sudo(built):
    checkout = built["checkout"]
    res, _run = run_module("kiln.flatcar.sysext", stage_args(checkout, name="mysx", packages=["app-containers/docker"]))
    assert not res.get("failed"), "%s\n%s" % (res.get("msg"), "\n".join(res.get("log_tail") or []))
    assert os.path.isfile(res["sysext"])
