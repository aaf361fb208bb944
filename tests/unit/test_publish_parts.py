# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the publish layers: record validation, manifest, layout, gate, backend selector, mirror ops."""
import dataclasses
import hashlib
import json
import os
import time

import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _mirror
from ansible_collections.kiln.flatcar.plugins.module_utils._pub_backends import LocalBackend, SshDirBackend, check_dir_base, select
from ansible_collections.kiln.flatcar.plugins.module_utils._pub_gate import apply_override, evaluate
from ansible_collections.kiln.flatcar.plugins.module_utils._pub_manifest import (
    Layout, PublishError, base_name, build_manifest, check_sources, join_key, locate_record,
)
from ansible_collections.kiln.flatcar.plugins.module_utils._pub_manifest import release_of as validate_release
from ansible_collections.kiln.flatcar.plugins.module_utils._record import KIND, SCHEMA_VERSION, record_path

VERSION = "4593.2.5+kiln-1"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def write_build(tmp_path, edit=None, board="amd64-usr"):
    root = tmp_path / "build"
    d = root / "images" / board / "x"
    d.mkdir(parents=True)
    outs = []
    for name, role, data in (("flatcar_production_image.bin.bz2", "generic_image", b"img"), ("version.txt", "version", b"V=1\n"),
                             ("flatcar_production_image.bin.bz2.sig", "signature", b"sig"),
                             ("flatcar_production_update.gz", "update_payload", b"payload")):
        (d / name).write_bytes(data)
        outs.append({"path": "images/%s/x/%s" % (board, name), "role": role, "size": len(data), "sha256": sha(data)})
    data = {"kind": KIND, "schema_version": SCHEMA_VERSION, "board": board,
            "version": {"FLATCAR_VERSION": VERSION, "FLATCAR_SDK_VERSION": "4593.0.0"},
            "stage_order": ["image", "sign", "boot_check:bios"],
            "stages": {"image": {"status": "passed", "outputs": [o for o in outs if o["role"] != "signature"]},
                       "sign": {"status": "passed", "outputs": [o for o in outs if o["role"] == "signature"]},
                       "boot_check:bios": {"status": "passed", "outputs": [], "details": {"verdict": "passed"}}}}
    if edit:
        edit(data)
    path = record_path(str(root), board, VERSION)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as fh:
        json.dump(data, fh)
    return path, str(root)


def load_release(path, root, want_board=None, want_version=None):
    """The record's data validated by _pub_manifest.release_of alone (defence in depth: BuildRecord.open refuses these
    hand-edited records first, against the schema; tests/unit/test_record_schema.py covers that)."""
    with open(path, encoding="utf-8") as fh:
        return validate_release(json.load(fh), path, root, want_board, want_version)


def release_of(tmp_path, edit=None):
    path, root = write_build(tmp_path, edit)
    return load_release(path, root)


def test_locate_record():
    location = locate_record(None, "/b", "amd64-usr", "stable-4593.2.5")
    assert (location.record_path, location.build_root) == ("/b/kiln/amd64-usr/4593.2.5/build-record.json", "/b")
    assert locate_record("/b/kiln/amd64-usr/1.2.3/build-record.json", None, None, None).build_root == "/b"
    with pytest.raises(PublishError, match="give record_path"):
        locate_record(None, "/b", None, None)
    with pytest.raises(PublishError, match="malformed"):
        locate_record(None, "/b", "amd64-usr", "1.2.3/../../x")


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(board="x86"), "names board 'x86'"),
    (lambda d: d.update(board=None), "names board None"),
    (lambda d: d.update(version={}), "no version.FLATCAR_VERSION"),
    (lambda d: d.update(version=None), "no version.FLATCAR_VERSION"),
    (lambda d: d["version"].update(FLATCAR_VERSION="1.2.3/../x"), "malformed"),
    (lambda d: d["version"].update(FLATCAR_VERSION="beta-4593.2.5"), "canonical"),
    (lambda d: d.update(stages=None), "stages null instead of an object"),
    (lambda d: d.update(stages=[]), "stages list instead of an object"),
    (lambda d: d.update(stage_order=None), "stage_order"),
])
def test_load_release_refuses(tmp_path, edit, words):
    with pytest.raises(PublishError) as exc:
        release_of(tmp_path, edit)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_load_release_checks_wanted_board_and_version(tmp_path):
    path, root = write_build(tmp_path)
    assert load_release(path, root, "amd64-usr", VERSION).version == VERSION
    with pytest.raises(PublishError, match="not arm64-usr"):
        load_release(path, root, "arm64-usr")
    with pytest.raises(PublishError, match="not 4593.2.6"):
        load_release(path, root, None, "4593.2.6")


def test_manifest_and_generated_files(tmp_path):
    rel = release_of(tmp_path)
    files = build_manifest(rel, ["image", "sign"], ["*"], [], str(tmp_path / "gen"))
    names = [(f.area, f.name) for f in files]
    assert names == [("release", "flatcar_production_image.bin.bz2"), ("release", "flatcar_production_image.bin.bz2.sig"),
                     ("release", "version.txt"), ("update", "flatcar_production_update.gz"),
                     ("update", "flatcar_production_update.gz.sha256")]
    gen = files[-1]
    assert gen.stage == "generated" and open(gen.source).read() == "%s  flatcar_production_update.gz\n" % sha(b"payload")
    with pytest.raises(dataclasses.FrozenInstanceError):
        files[0].name = "x"
    check_sources(files)
    with open(files[0].source, "ab") as fh:
        fh.write(b"!")
    with pytest.raises(PublishError, match="changed size"):
        check_sources(files)


def test_manifest_generates_version_txt_from_the_parsed_version(tmp_path):
    rel = release_of(tmp_path, lambda d: d["stages"]["image"]["outputs"].pop(1))
    files = build_manifest(rel, ["image"], ["*"], [], str(tmp_path / "gen"))
    vt = next(f for f in files if f.name == "version.txt")
    assert open(vt.source).read() == ("FLATCAR_VERSION=4593.2.5+kiln-1\nFLATCAR_VERSION_ID=4593.2.5\nFLATCAR_BUILD_ID=\"kiln-1\"\n"
                                      "FLATCAR_SDK_VERSION=4593.0.0\n")


@pytest.mark.parametrize("out, words", [
    ({"path": "../x", "size": 1, "sha256": "0" * 64}, "contains '..'"),
    ({"path": "/etc/passwd", "size": 1, "sha256": "0" * 64}, "is absolute"),
    ({"path": None, "size": 1, "sha256": "0" * 64}, "not a relative path"),
    ({"path": "images/.hidden", "size": 1, "sha256": "0" * 64}, "not a plain file"),
    ({"path": "images/a", "sha256": "0" * 64}, "has no size"),
    ({"path": "images/a", "size": "12", "sha256": "0" * 64}, "invalid ('12') size"),
    ({"path": "images/a", "size": True, "sha256": "0" * 64}, "invalid (True) size"),
    ({"path": "images/a", "size": 1}, "has no sha256"),
    ({"path": "images/a", "size": 1, "sha256": "ABC"}, "invalid sha256"),
    ("images/a", "not an object"),
])
def test_manifest_refuses_bad_outputs(tmp_path, out, words):
    rel = release_of(tmp_path, lambda d: d["stages"]["image"]["outputs"].append(out))
    with pytest.raises(PublishError) as exc:
        build_manifest(rel, ["image"], ["*"], [], str(tmp_path / "gen"))
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_manifest_refuses_conflicting_stages_and_empty(tmp_path):
    def dup(d):
        d["stage_order"].append("vm_image:qemu")
        d["stages"]["vm_image:qemu"] = {"status": "passed", "outputs": [dict(d["stages"]["image"]["outputs"][0], sha256="1" * 64)]}
    rel = release_of(tmp_path, dup)
    with pytest.raises(PublishError, match="both record flatcar_production_image.bin.bz2"):
        build_manifest(rel, ["image", "vm_image:*"], ["*"], [], str(tmp_path / "gen"))
    with pytest.raises(PublishError, match="nothing to publish"):
        build_manifest(rel, ["nosuchstage"], ["*"], [], str(tmp_path / "gen"))


def test_layout_is_frozen_and_per_backend():
    lay = Layout.build(os.path.join, "/srv/m", None, "amd64-usr", VERSION, ())
    assert lay.release_staging == "/srv/m/amd64-usr/.kiln-staging-" + VERSION
    assert lay.update_final == "/srv/m/update/amd64-usr/" + VERSION and lay.current == "/srv/m/amd64-usr/current"
    with pytest.raises(dataclasses.FrozenInstanceError):
        lay.base = "/elsewhere"
    s3 = Layout.build(join_key, "", "upd/", "arm64-usr", VERSION, ())
    assert (s3.board_dir, s3.update_final, s3.current) == ("arm64-usr", "upd/arm64-usr/" + VERSION, "arm64-usr/current")
    assert base_name("a.bin.DIGESTS.asc") == "a.bin"


def test_backend_selector_and_base_checks():
    assert select("local") is LocalBackend and select("dir") is SshDirBackend
    assert select("s3").kind == "s3"
    with pytest.raises(PublishError):
        select("ftp")
    assert check_dir_base("/srv/m/", "base") == "/srv/m"
    for bad in ("relative", "/srv/../etc", "", None):
        with pytest.raises(PublishError):
            check_dir_base(bad, "base")
    opts = {"base": "/srv/m", "update_base": "/srv/m/../../etc"}
    with pytest.raises(PublishError, match="update_base"):
        LocalBackend.make_layout(opts, "amd64-usr", VERSION, ())


def test_gate(tmp_path):
    rel = release_of(tmp_path)
    files = build_manifest(rel, ["image", "sign"], ["*"], [], str(tmp_path / "gen"))
    gate = evaluate(rel, files)
    assert gate["passed"] and gate["boot_checks"] == ["boot_check:bios"] and gate["signatures"] == 1
    gate = evaluate(rel, files, boot_check_stages=["boot_check:uefi"], verify=lambda pairs: ["%s bad" % s.name for s, _f in pairs])
    assert gate["problems"] == ["boot_check:uefi has not passed (needs status passed and details.verdict == passed)",
                                "flatcar_production_image.bin.bz2.sig bad"]
    with pytest.raises(PublishError, match="publish gate refused"):
        apply_override(gate, rel, False, None)
    with pytest.raises(PublishError, match="needs gate_override_reason"):
        apply_override(gate, rel, True, "  ")
    assert apply_override(gate, rel, True, " hot\nfix ")["reason"] == "hot fix"
    unsigned = [f for f in files if not f.name.endswith(".sig")]
    assert "no signature (.sig from stage sign) for flatcar_production_image.bin.bz2" in evaluate(rel, unsigned)["problems"]


def _spec(tmp_path, version="2.0.0"):
    board = tmp_path / "amd64-usr"
    board.mkdir(exist_ok=True)
    files = [{"name": "version.txt", "area": "release", "size": 2, "sha256": sha(b"v\n")}]
    return {"board_dir": str(board), "sweep_dirs": [str(board)], "files": files,
            "areas": {"release": {"final": str(board / version), "staging": str(board / (".kiln-staging-" + version))}}}


def test_mirror_discard_empty_and_sweep(tmp_path):
    spec = _spec(tmp_path)
    staging = spec["areas"]["release"]["staging"]
    _mirror.run_op("inspect", dict(spec, prepare=True))
    assert os.path.isdir(staging)
    os.makedirs(os.path.join(staging, _mirror.PARTIAL_DIR))
    assert _mirror.run_op("discard_empty", spec) == {"removed": [staging]}
    # non-empty staging is kept (a resume needs it)
    os.makedirs(staging)
    open(os.path.join(staging, "version.txt"), "w").write("v")
    assert _mirror.run_op("discard_empty", spec) == {"removed": []} and os.path.isdir(staging)
    # the sweep: stale empty leftovers of other versions go, fresh ones and this release's stay
    board = spec["board_dir"]
    old = os.path.join(board, ".kiln-staging-1.0.0")
    fresh = os.path.join(board, ".kiln-staging-1.5.0")
    os.makedirs(old)
    os.makedirs(fresh)
    os.utime(old, (time.time() - 2 * _mirror.STALE_SECONDS,) * 2)
    res = _mirror.run_op("inspect", dict(spec, prepare=True))
    assert res["discarded"] == [old] and os.path.isdir(fresh) and os.path.isdir(staging)
    # inspect without prepare (check mode) changes nothing
    os.utime(fresh, (time.time() - 2 * _mirror.STALE_SECONDS,) * 2)
    assert "discarded" not in _mirror.run_op("inspect", spec) and os.path.isdir(fresh)


def test_mirror_main_answers_errors_as_data(tmp_path):
    assert _mirror.main({"op": "nope", "spec": {}}) == {"ok": False, "error": "unknown mirror operation 'nope'"}
    assert _mirror.main({"op": "verify", "spec": _spec(tmp_path)})["ok"] is True
