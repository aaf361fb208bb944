"""The SDK stages (packages, image, vm_image, sysext) on the stage engine, in-process: an exception injected
inside a stage body (after ``begin``, where the SDK command would run, and before it) leaves the stage
``failed`` in the build record with a one-line message, never ``running``, and the lock released; earlier
stages are untouched. The checkout is the stand-in scripts tree (real preflight); no container runs."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _record as r
from ansible_collections.kiln.flatcar.plugins.module_utils import _runner, _sdk
from ansible_collections.kiln.flatcar.plugins.module_utils import _stage as s
from ansible_collections.kiln.flatcar.plugins.modules import image, packages, sysext, vm_image

from module_testlib import boom, call_module, lock_is_free
from standin_sdk import fixture as sdk

BOARD = "amd64-usr"
TAG = "stable-4593.2.5"


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """A stand-in scripts checkout (the origin repo itself), made once."""
    dest = tmp_path_factory.mktemp("sdkstage") / "scripts"
    sdk.make_scripts_origin(dest, tags=[TAG])
    return dest


def seed(scripts):
    """A record with packages and image passed and a build_dir holding the sysext base; returns (location, build dir)."""
    loc = s.locate(scripts_dir=str(scripts), board=BOARD)
    build_dir = os.path.join(loc.build_root, "images", BOARD, "developer-%s-a1" % loc.version)
    os.makedirs(build_dir, exist_ok=True)
    base = os.path.join(build_dir, "flatcar_production_image_sysext.squashfs")
    with open(base, "wb") as fh:
        fh.write(b"squashfs" * 64)
    with r.BuildRecord.open(loc.record_path, board=BOARD, version={"FLATCAR_VERSION": loc.version}, build_root=loc.build_root) as rec:
        for name in ("packages", "image"):
            rec.begin(name, {"stage": name}, r.digest({"stage": name}))
            rec.finish(name, [r.describe_output(loc.build_root, base, "sysext_base")] if name == "image" else [])
        rec.set("build_dir", os.path.relpath(build_dir, loc.build_root))
        rec.save()
    return loc, build_dir


CASES = {
    "packages": (packages, "packages", {}),
    "image": (image, "image", {}),
    "vm_image": (vm_image, "vm_image:qemu_uefi", {"formats": ["qemu_uefi"]}),
    "sysext": (sysext, "sysext:kilntest", {"name": "kilntest", "packages": ["app-misc/jq"]}),
}


@pytest.mark.parametrize("where", ["body", "before_begin"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_injected_exception_in_each_sdk_stage(origin, capsys, monkeypatch, name, where):
    scripts = origin  # a fresh build root per case: __build__ is removed afterwards
    loc, _build_dir = seed(scripts)
    try:
        mod, stage, extra = CASES[name]
        monkeypatch.setattr(_sdk, "detect_engine", lambda *a, **k: ("docker", ["/bin/false"]))
        monkeypatch.setattr(_sdk, "image_id", lambda *a, **k: "sha256:" + "0" * 64)
        if where == "body":
            monkeypatch.setattr(_runner.Runner, "run", boom)  # the SDK command, after begin
        else:
            monkeypatch.setattr(_sdk.SdkStage, "base_inputs", boom)  # inside the record, before begin
        res = call_module(mod, dict(extra, scripts_dir=str(scripts), board=BOARD), capsys, name)
        assert res["failed"] and res["msg"] == "kiln.flatcar.%s: stage %s failed with RuntimeError: injected: disk on fire" % (name, stage)
        assert "\n" not in res["msg"] and "exception" not in res and res["record_path"] == loc.record_path
        data = json.load(open(loc.record_path, encoding="utf-8"))
        entry = data["stages"][stage]
        assert entry["status"] == "failed" and entry["message"] == res["msg"]
        assert (entry["input_digest"] is not None) == (where == "body")
        assert all(data["stages"][n]["status"] == "passed" for n in ("packages", "image") if n != stage)  # earlier stages untouched
        assert lock_is_free(loc.record_path)
    finally:
        shutil.rmtree(os.path.join(str(scripts), "__build__"), ignore_errors=True)
