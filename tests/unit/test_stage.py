"""The stage engine (plugins/module_utils/_stage.py): locate, the lock wait policy, read-only check mode,
is_current with outputs changed on disk, force, require, and failure on any exception inside a stage body
(driven directly, and inside the real modules with an injected exception)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _record as r
from ansible_collections.kiln.flatcar.plugins.module_utils import _stage as s

from kiln_testlib import fs_snapshot
from module_testlib import boom, call_module, lock_is_free

BOARD = "amd64-usr"
VERSION = "4593.2.5"


class FakeModule:
    """What the engine uses of AnsibleModule; fail_json/exit_json end the run with SystemExit like the real ones."""

    def __init__(self, check_mode=False, force=False):
        self.check_mode = check_mode
        self.params = {"force": force}
        self._name = "kiln.flatcar.fake"
        self.failed = None

    def fail_json(self, msg, **kwargs):
        self.failed = dict(kwargs, msg=msg)
        raise SystemExit(1)


def make_record(root, stages=("image",)):
    """A record with passed stages, each with one output; returns (location, {stage: output path})."""
    loc = s.locate(build_root=str(root), board=BOARD, version=VERSION)
    files = {}
    with r.BuildRecord.open(loc.record_path, board=BOARD, version={"FLATCAR_VERSION": VERSION}, build_root=str(root)) as rec:
        for name in stages:
            out = root / "images" / BOARD / ("%s.bin" % name.replace(":", "_"))
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(name.encode() * 100)
            rec.begin(name, {"stage": name}, r.digest({"stage": name}))
            rec.finish(name, [r.describe_output(str(root), str(out), "other")])
            files[name] = str(out)
    return loc, files


# -- locate ----------------------------------------------------------------------------------------

def test_locate_every_way(tmp_path):
    rec = tmp_path / "images" / "kiln" / BOARD / VERSION / "build-record.json"
    loc = s.locate(str(rec))
    assert loc.record_path == str(rec) and loc.build_root == str(tmp_path / "images")
    assert loc.state_dir == str(rec.parent) and loc.log_path("boot_check:uefi").endswith("/logs/boot_check_uefi.log")
    assert loc.relative(str(tmp_path / "images" / "a" / "b")) == "a/b" and loc.relative("/elsewhere") is None
    assert s.locate(str(rec), build_root="/x").build_root == "/x"
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "sdk_container" / ".repo" / "manifests").mkdir(parents=True)
    (scripts / "sdk_container" / ".repo" / "manifests" / "version.txt").write_text(
        "FLATCAR_VERSION=%s\nFLATCAR_VERSION_ID=%s\nFLATCAR_SDK_VERSION=%s\n" % (VERSION, VERSION, VERSION))
    loc = s.locate(scripts_dir=str(scripts), board=BOARD)
    assert loc.record_path == os.path.join(str(scripts), "__build__", "images", "kiln", BOARD, VERSION, "build-record.json")
    assert loc.build_root == os.path.join(str(scripts), "__build__", "images") and loc.version == VERSION
    assert s.locate(scripts_dir=str(scripts), board=BOARD, version="1.2.3").record_path.endswith("/1.2.3/build-record.json")
    loc = s.locate(build_root=str(tmp_path), board=BOARD, version=VERSION)
    assert loc.record_path == r.record_path(str(tmp_path), BOARD, VERSION)
    none = s.locate()
    assert none.record_path is None and none.build_root is None and none.log_path("x") is None
    with pytest.raises(s.LocateError, match="needs board"):
        s.locate(scripts_dir=str(scripts))
    with pytest.raises(s.LocateError, match="pinned version"):
        s.locate(scripts_dir=str(tmp_path / "nowhere"), board=BOARD)
    with pytest.raises(s.LocateError, match="both board and version"):
        s.locate(build_root=str(tmp_path), board=BOARD)


# -- the lock --------------------------------------------------------------------------------------

def test_lock_wait_policy_refuses_after_the_wait(tmp_path):
    loc, _files = make_record(tmp_path)
    holder = r.BuildRecord.open(loc.record_path, create=False)
    try:
        module = FakeModule()
        start = time.monotonic()
        with pytest.raises(SystemExit):
            s.Stage(module, "sign", loc, wait=0.6, poll=0.05).open()
        waited = time.monotonic() - start
        assert 0.6 <= waited < 3, waited
        assert "being written by another kiln task" in module.failed["msg"] and "waited 0.6s" in module.failed["msg"]
        assert "pid=%d" % os.getpid() in module.failed["msg"]
        module = FakeModule()
        start = time.monotonic()
        with pytest.raises(SystemExit):
            s.Stage(module, "sign", loc).open()  # wait 0: refused at once
        assert time.monotonic() - start < 0.5
    finally:
        holder.close()


def test_lock_wait_policy_gets_the_lock_when_it_is_released(tmp_path):
    loc, _files = make_record(tmp_path)
    holder = r.BuildRecord.open(loc.record_path, create=False)
    timer = threading.Timer(0.4, holder.close)
    timer.start()
    try:
        start = time.monotonic()
        with s.Stage(FakeModule(), "sign", loc, wait=10, poll=0.05) as stage:
            assert stage.locked and not lock_is_free(loc.record_path)
        assert 0.3 <= time.monotonic() - start < 5
        assert lock_is_free(loc.record_path)
    finally:
        timer.join()


def test_lock_held_from_open_to_finish(tmp_path):
    loc, files = make_record(tmp_path)
    module = FakeModule()
    with s.Stage(module, "sign", loc) as stage:
        assert module.fail_json == stage._failing  # pylint: disable=comparison-with-callable
        stage.is_current({"k": 1})
        stage.begin()
        assert not lock_is_free(loc.record_path)
        stage.finish([stage.describe(files["image"], "signature")], {"x": 1})
        assert lock_is_free(loc.record_path) and not stage.locked
    assert module.fail_json == module.__class__.fail_json.__get__(module)  # pylint: disable=no-value-for-parameter
    data = json.load(open(loc.record_path))
    assert data["stages"]["sign"]["status"] == "passed" and data["stages"]["sign"]["details"] == {"x": 1}


# -- check mode ------------------------------------------------------------------------------------

def test_check_mode_writes_nothing_even_without_a_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    root = tmp_path / "root"
    root.mkdir()
    before = fs_snapshot([tmp_path])
    loc = s.locate(build_root=str(root), board=BOARD, version=VERSION)
    module = FakeModule(check_mode=True)
    with s.Stage(module, "image", loc, create=True, version_fields={"FLATCAR_VERSION": VERSION}) as stage:
        assert stage.record is not None and stage.record.read_only and not stage.locked
        assert stage.is_current({"a": 1}) == (False, "stage has not run")
        runner = stage.runner()
        assert runner.log_path == os.devnull
        runner.note("nothing reaches a file")
        with pytest.raises(r.RecordError, match="check mode"):
            stage.begin()
    with s.Stage(FakeModule(check_mode=True), "sign", s.locate()) as stage:  # no record: private log, not created
        assert stage.runner().log_path == os.devnull and "kiln-%d" % os.getuid() in stage.log_path
    assert fs_snapshot([tmp_path]) == before


def test_check_mode_reads_a_locked_record_without_waiting(tmp_path):
    loc, _files = make_record(tmp_path)
    holder = r.BuildRecord.open(loc.record_path, create=False)
    try:
        before = fs_snapshot([tmp_path])
        with s.Stage(FakeModule(check_mode=True), "sign", loc) as stage:
            assert stage.require("image", "build it")["status"] == "passed"
        with s.Stage(FakeModule(), None, loc, writes=False) as reader:  # a reader never locks
            assert reader.record.read_only and not reader.locked
        assert fs_snapshot([tmp_path]) == before
    finally:
        holder.close()


# -- is_current / force ------------------------------------------------------------------------------

def test_is_current_follows_the_outputs_on_disk_and_force_overrides(tmp_path):
    loc, files = make_record(tmp_path, stages=("image", "sign"))
    inputs = {"stage": "sign"}
    with s.Stage(FakeModule(check_mode=True), "sign", loc) as stage:
        assert stage.is_current(inputs) == (True, "passed with the same inputs and its outputs verify")
        assert stage.is_current({"stage": "other"}) == (False, "inputs changed")
        assert stage.is_current(inputs, extra_check=lambda entry: "container gone") == (False, "container gone")
        assert stage.is_current({"x": 1}, input_digest=r.digest(inputs))[0] is True
    with s.Stage(FakeModule(check_mode=True, force=True), "sign", loc) as stage:
        assert stage.is_current(inputs) == (False, "forced")
    with open(files["sign"], "r+b") as fh:  # same size, other content
        fh.write(b"X")
    with s.Stage(FakeModule(check_mode=True), "sign", loc) as stage:
        current, reason = stage.is_current(inputs)
        assert not current and "changed content" in reason
    os.unlink(files["sign"])
    with s.Stage(FakeModule(check_mode=True), "sign", loc) as stage:
        current, reason = stage.is_current(inputs)
        assert not current and "missing" in reason
    with s.Stage(FakeModule(check_mode=True), "sign", s.locate()) as stage:
        assert stage.is_current(inputs) == (False, "no build record")


# -- require / failures ----------------------------------------------------------------------------

def test_require_refuses_a_stage_that_has_not_passed(tmp_path):
    loc, _files = make_record(tmp_path)
    module = FakeModule()
    with pytest.raises(SystemExit):
        with s.Stage(module, "payload", loc) as stage:
            stage.require("sign", "sign the artifacts first")
    assert module.failed["msg"] == "stage sign has not passed in %s (never ran): sign the artifacts first" % loc.record_path
    data = json.load(open(loc.record_path))
    assert data["stages"]["payload"]["status"] == "failed"  # a refusal while holding the record is recorded
    assert data["stages"]["image"]["status"] == "passed" and lock_is_free(loc.record_path)


@pytest.mark.parametrize("name", ["sign", "payload", "boot_check:uefi", "boot_check:bios"])
@pytest.mark.parametrize("began", [False, True])
def test_exception_in_the_body_fails_the_stage_and_releases_the_lock(tmp_path, name, began):
    loc, _files = make_record(tmp_path)
    module = FakeModule()
    with pytest.raises(SystemExit):
        with s.Stage(module, name, loc) as stage:
            stage.is_current({"n": name})
            if began:
                stage.begin()
            raise RuntimeError("injected\nfailure")
    msg = module.failed["msg"]
    assert msg == "kiln.flatcar.fake: stage %s failed with RuntimeError: injected failure" % name, msg
    assert "\n" not in msg and "Traceback" not in msg and module.failed["stage"] == name
    entry = json.load(open(loc.record_path))["stages"][name]
    assert entry["status"] == "failed" and entry["message"] == msg and entry["input_digest"] == r.digest({"n": name})
    assert lock_is_free(loc.record_path) and module.fail_json == module.__class__.fail_json.__get__(module)  # pylint: disable=no-value-for-parameter
    assert json.load(open(loc.record_path))["stages"]["image"]["status"] == "passed"


def test_fail_with_details_and_an_interrupt(tmp_path):
    loc, _files = make_record(tmp_path)
    module = FakeModule()
    with pytest.raises(SystemExit):
        with s.Stage(module, "boot_check:uefi", loc) as stage:
            stage.begin()
            stage.fail("boot check failed:\n timeout", details={"verdict": "timeout"}, rc=-9)
    entry = json.load(open(loc.record_path))["stages"]["boot_check:uefi"]
    assert entry["details"] == {"verdict": "timeout", "rc": -9} and entry["message"] == "boot check failed: timeout"
    module = FakeModule()
    with pytest.raises(SystemExit):
        with s.Stage(module, "boot_check:uefi", loc):
            raise KeyboardInterrupt()
    assert "failed with KeyboardInterrupt" in module.failed["msg"] and lock_is_free(loc.record_path)


def test_exception_without_a_record_is_still_one_line(tmp_path):
    module = FakeModule()
    with pytest.raises(SystemExit):
        with s.Stage(module, "sign", s.locate()):
            raise OSError(5, "Input/output error")
    assert module.failed["msg"] == "kiln.flatcar.fake: stage sign failed with OSError: [Errno 5] Input/output error"


# -- inside the real modules: an exception injected into each converted stage ----------------------------

@pytest.mark.parametrize("name", ["artifact_sign", "update_payload", "boot_check"])
def test_injected_exception_in_each_module_stage(tmp_path, capsys, monkeypatch, name):
    from ansible_collections.kiln.flatcar.plugins.modules import artifact_sign, boot_check, update_payload

    loc, files = make_record(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    if name == "artifact_sign":
        mod, stage = artifact_sign, "sign"
        args = {"record_path": loc.record_path, "key_fingerprint": "A" * 40}
        monkeypatch.setattr(artifact_sign, "select_files", boom)
        monkeypatch.setattr(artifact_sign, "Gpg", lambda *a, **k: type("G", (), {"close": lambda self: None})())
    elif name == "update_payload":
        mod, stage = update_payload, "payload"
        args = {"record_path": loc.record_path, "build_dir": str(tmp_path), "private_keys": ["k"], "public_keys": ["p"]}
        monkeypatch.setattr(update_payload, "load_public_keys", boom)
    else:
        if boot_check.q.shutil.which("qemu-system-x86_64") is None:
            pytest.skip("QEMU is not installed")
        mod, stage = boot_check, "boot_check:uefi"
        args = {"record_path": loc.record_path, "board": BOARD, "accel": "tcg", "image": files["image"],
                "cache_dir": str(tmp_path / "cache")}
        monkeypatch.setattr(boot_check.Check, "image", boom)
    res = call_module(mod, args, capsys, name)  # restores the signal handlers boot_check sets
    assert res["failed"] and res["msg"] == "kiln.flatcar.%s: stage %s failed with RuntimeError: injected: disk on fire" % (name, stage)
    assert "exception" not in res and res["record_path"] == loc.record_path
    entry = json.load(open(loc.record_path))["stages"][stage]
    assert entry["status"] == "failed" and entry["message"] == res["msg"]
    assert lock_is_free(loc.record_path)
