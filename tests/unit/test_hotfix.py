"""Hotfix planning (_hotfix): version numbering never reuses a known version, and the pins come from the release record."""

import hashlib

import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _hotfix as h
from ansible_collections.kiln.flatcar.plugins.module_utils import _record as r

from module_testlib import call_module

from ansible_collections.kiln.flatcar.plugins.modules import hotfix_plan

RELEASE = "4593.2.5"


def _release(root, patch=None, version=RELEASE, packages=True):
    vid, _sep, bid = version.partition("+")
    ver = {"FLATCAR_VERSION": version, "FLATCAR_VERSION_ID": vid, "FLATCAR_SDK_VERSION": "4593.2.5",
           "channel": "developer" if bid else "stable", "official": not bid}
    if bid:
        ver["FLATCAR_BUILD_ID"] = bid
    path = r.record_path(str(root), "amd64-usr", version)
    with r.BuildRecord.open(path, board="amd64-usr", version=ver, build_root=str(root)) as rec:
        patches = [{"path": str(patch), "sha256": hashlib.sha256(patch.read_bytes()).hexdigest()}] if patch else []
        rec.set("source", {"repo": "https://github.com/flatcar/scripts", "ref": "stable-4593.2.5", "base_commit": "a" * 40,
                           "commit": "b" * 40, "patches": patches})
        if packages:
            inputs = {"flags": ["--board=amd64-usr", "--usepkg"], "sdk_image": {"ref": "ghcr.io/flatcar/flatcar-sdk-all:4593.2.5"},
                      "scripts_commit": "b" * 40}
            rec.begin("packages", inputs, r.digest(inputs))
            rec.finish("packages", [])
        inputs = {"flags": ["--board=amd64-usr", "--group=stable"], "image_types": ["prod"]}
        rec.begin("image", inputs, r.digest(inputs))
        rec.finish("image", [])
    return path


@pytest.mark.parametrize("bid,n,want", [("", 1, "hotfix-1"), ("", 12, "hotfix-12"), ("kiln-1", 2, "kiln-1-hotfix-2")])
def test_build_id(bid, n, want):
    assert h.hotfix_build_id(bid, n) == want


@pytest.mark.parametrize("n", [0, -1, 10 ** 6, "1", None])
def test_build_id_refuses_bad_numbers(n):
    with pytest.raises(h.HotfixError):
        h.hotfix_build_id("", n)


def test_next_number_skips_every_known_hotfix():
    known = ["4593.2.5", "4593.2.5+hotfix-1", "4593.2.5+hotfix-3", "4593.2.50+hotfix-9", "4593.2.5+hotfix-x",
             "4593.2.5+hotfix-01", "4593.2.5+hotfix-2+x", "4593.2.6+hotfix-7"]
    assert h.next_number(RELEASE, known) == 4
    assert h.next_number(RELEASE, []) == 1
    assert h.next_number("4593.2.5+kiln-1", ["4593.2.5+kiln-1-hotfix-5", "4593.2.5+hotfix-8", "4593.2.5+kiln-1+hotfix-9"]) == 6


def test_plan_pins_the_release(tmp_path):
    patch = tmp_path / "0001-fix.patch"
    patch.write_text("From x\n")
    _release(tmp_path, patch)
    # a hotfix built here earlier (published or not) counts, and so do versions known elsewhere
    _release(tmp_path, version="4593.2.5+hotfix-1")
    out = h.plan(str(tmp_path), "amd64-usr", RELEASE, ["4593.2.5+hotfix-2"])
    assert out["next_number"] == 3 and out["next_version"] == "4593.2.5+hotfix-3" and out["next_build_id"] == "hotfix-3"
    assert out["existing_hotfixes"] == ["4593.2.5+hotfix-1", "4593.2.5+hotfix-2"]
    assert out["base_commit"] == "a" * 40 and out["commit"] == "b" * 40 and out["patches"] == [str(patch)]
    assert out["sdk_version"] == "4593.2.5" and out["packages_flags"] == ["--board=amd64-usr", "--usepkg"]
    assert out["image_types"] == ["prod"]


def test_changed_release_patch_is_refused(tmp_path):
    patch = tmp_path / "0001-fix.patch"
    patch.write_text("From x\n")
    _release(tmp_path, patch)
    patch.write_text("From y\n")
    with pytest.raises(h.HotfixError, match="changed since the release"):
        h.plan(str(tmp_path), "amd64-usr", RELEASE)
    patch.unlink()
    with pytest.raises(h.HotfixError, match="is gone"):
        h.plan(str(tmp_path), "amd64-usr", RELEASE)


def test_incomplete_or_missing_release_is_refused(tmp_path):
    with pytest.raises(h.HotfixError, match="no usable build record"):
        h.plan(str(tmp_path), "amd64-usr", RELEASE)
    _release(tmp_path, packages=False)
    with pytest.raises(h.HotfixError, match="no passed packages and image stages"):
        h.plan(str(tmp_path), "amd64-usr", RELEASE)


def test_module_one_line_errors_and_no_writes(tmp_path, capsys):
    _release(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    args = {"release": RELEASE, "board": "amd64-usr", "build_root": str(tmp_path), "known_versions": ["4593.2.5+hotfix-4"]}
    res = call_module(hotfix_plan, args, capsys, check=True)
    assert res.get("failed") is not True and res["next_version"] == "4593.2.5+hotfix-5"
    assert sorted(p for p in tmp_path.rglob("*")) == before
    for bad in ({"release": "stable-4593.2.5"}, {"release": "4593.2.5\nx"}, {"known_versions": ["../x"]},
                {"release": "4593.2.6"}, {"patches": ["/nonexistent/0001-fix.patch"]}, {"patches": ["relative.patch"]},
                {"mods": [{"kind": "kernel_config", "options": ["CONFIG_FOO=maybe"]}]}, {"mods": [{"kind": "nope"}]}):
        args = dict({"release": RELEASE, "board": "amd64-usr", "build_root": str(tmp_path)}, **bad)
        res = call_module(hotfix_plan, args, capsys)
        assert res["failed"] and "\n" not in res["msg"] and res["msg"].startswith("hotfix_plan: "), res


def test_rollback_is_recorded_once_with_its_reason(tmp_path, capsys):
    from ansible_collections.kiln.flatcar.plugins.modules import rollback_record
    path = _release(tmp_path, version="4593.2.5+hotfix-1")
    args = {"record_path": path, "target": "stable", "to_version": RELEASE, "reason": "INC-1: NFS\nhangs",
            "requested_by": "oncall", "result": {"moved": True, "before": {"version": "4593.2.5+hotfix-1"}}}
    before = open(path).read()
    assert call_module(rollback_record, args, capsys, check=True)["changed"] is True
    assert open(path).read() == before  # check mode: nothing written
    assert call_module(rollback_record, args, capsys)["changed"] is True
    assert call_module(rollback_record, args, capsys)["changed"] is False  # same rollback again: no change
    stage = r.load_data(path)["stages"]["rollback:stable"]
    assert stage["status"] == "passed" and stage["details"]["reason"] == "INC-1: NFS hangs"
    assert stage["details"]["to_version"] == RELEASE and stage["details"]["result"]["moved"] is True
    for bad in ({"reason": "  "}, {"target": "../x"}, {"to_version": "stable-4593.2.5"}):
        res = call_module(rollback_record, dict(args, **bad), capsys)
        assert res["failed"] and "\n" not in res["msg"], res
