"""The SDK stage modules on the stage engine write nothing in check mode (real ansible-playbook --check runs of
sdk_checkout, sdk_image, packages, image, vm_image and sysext against the stand-in SDK): the checkout's
__build__ tree (build root, record, state directory, logs, images) and TMPDIR are snapshotted (listing, type,
size, mtime) around each run, on a fresh checkout (no record, no state directory yet) and after a real build
(each stage forced, so check mode goes as far as it can)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from kiln_testlib import fs_changes, fs_snapshot, run_module
from standin_sdk import fixture as sdk

SDK_VERSION = "4593.2.5"
TAG = "stable-4593.2.5"
VERSION = "4593.2.5+checkmode"
BOARD = "amd64-usr"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the stand-in SDK container needs root")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not sdk.dockerd_start():
        pytest.skip("no working docker daemon on this machine")
    base = tmp_path_factory.mktemp("sdkcheck")
    cache = base / "cache"
    sdk.ensure_sdk_image("all", SDK_VERSION, save_dir=str(cache))
    origin = sdk.make_scripts_origin(base / "origin", tags=[TAG])
    tmpdir = tempfile.mkdtemp(prefix="ksc-")
    yield {"base": base, "cache": str(cache), "origin": origin, "tmpdir": tmpdir}
    sdk.remove_containers("flatcar-sdk-all-4593.2.5_os-4593.2.5-checkmode")
    shutil.rmtree(tmpdir, ignore_errors=True)


def unchanged_by_check_mode(env, watched, module, args, failing=None):
    """Run ``module`` in check mode; nothing under ``watched`` or TMPDIR may change. ``failing``: the refusal expected."""
    before = fs_snapshot(list(watched) + [env["tmpdir"]], volatile_roots=(env["tmpdir"],))
    res, _run = run_module(module, args, check=True, task_env={"TMPDIR": env["tmpdir"]})
    after = fs_snapshot(list(watched) + [env["tmpdir"]], volatile_roots=(env["tmpdir"],))
    if failing:
        assert res.get("failed") and failing in res["msg"] and "\n" not in res["msg"], res
    else:
        assert not res.get("failed"), res.get("msg")
    changes = fs_changes(before, after)
    assert not changes, (module, changes)
    return res


def record_of(checkout):
    with open(os.path.join(checkout, "__build__", "images", "kiln", BOARD, VERSION, "build-record.json"), encoding="utf-8") as fh:
        return json.load(fh)


def test_sdk_stages_write_nothing_in_check_mode(env):
    checkout = env["base"] / "scripts"
    build = checkout / "__build__"
    checkout_args = {"dest": str(checkout), "repo": env["origin"], "ref": TAG, "version": VERSION}
    common = {"scripts_dir": str(checkout), "board": BOARD, "sdk_registry": sdk.STANDIN_REGISTRY}
    sysext_args = dict(common, name="kilntest", packages=["app-containers/docker"])
    res, _run = run_module("kiln.flatcar.sdk_checkout", checkout_args)
    assert res.get("changed") and not res.get("failed"), res
    state = os.path.join(str(build), "images", "kiln", BOARD, VERSION)
    assert not os.path.exists(state)

    # a fresh checkout: no record, no state directory, no logs are made
    unchanged_by_check_mode(env, [build], "kiln.flatcar.sdk_checkout", checkout_args)
    image_args = {"scripts_dir": str(checkout), "source": "cache", "cache": env["cache"], "sdk_registry": sdk.STANDIN_REGISTRY}
    unchanged_by_check_mode(env, [build], "kiln.flatcar.sdk_image", image_args)
    for module, args in (("kiln.flatcar.packages", common), ("kiln.flatcar.image", common)):
        res = unchanged_by_check_mode(env, [build], module, args)
        assert res["changed"] and res["reason"] and res["log_path"].startswith(state + "/logs/"), res
    unchanged_by_check_mode(env, [build], "kiln.flatcar.vm_image", dict(common, formats=["qemu_uefi"]), failing="stage image has not passed")
    unchanged_by_check_mode(env, [build], "kiln.flatcar.sysext", sysext_args, failing="stage image has not passed")
    assert not os.path.exists(state)

    # a real build of every stage
    res, _run = run_module("kiln.flatcar.sdk_image", image_args)
    assert not res.get("failed"), res
    for module, args in (("kiln.flatcar.packages", common), ("kiln.flatcar.image", common),
                         ("kiln.flatcar.vm_image", dict(common, formats=["qemu_uefi"])), ("kiln.flatcar.sysext", sysext_args)):
        res, _run = run_module(module, args)
        assert res.get("changed") and not res.get("failed"), (module, res)
    rec = record_of(checkout)
    assert [rec["stages"][n]["status"] for n in ("packages", "image", "vm_image:qemu_uefi", "sysext:kilntest")] == ["passed"] * 4

    # after it: current stages report no change, forced ones would run; still nothing is written
    for module, args in (("kiln.flatcar.packages", common), ("kiln.flatcar.image", common),
                         ("kiln.flatcar.vm_image", dict(common, formats=["qemu_uefi"])), ("kiln.flatcar.sysext", sysext_args)):
        res = unchanged_by_check_mode(env, [build], module, args)
        assert res["changed"] is False, (module, res)
        res = unchanged_by_check_mode(env, [build], module, dict(args, force=True))
        assert res["changed"] is True, (module, res)
        reasons = [f["reason"] for f in res["formats"].values()] if "formats" in res else [res["reason"]]
        assert reasons == ["forced"], (module, res)
    unchanged_by_check_mode(env, [build], "kiln.flatcar.sdk_checkout", checkout_args)
    assert record_of(checkout) == rec
    # no lock is held afterwards: a real run gets the record at once
    res, _run = run_module("kiln.flatcar.packages", common)
    assert res["changed"] is False and not res.get("failed"), res
