import json
import multiprocessing
import os

import jsonschema
import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _record as r

SCHEMA = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "build-record.schema.json")))
VERSION = {"FLATCAR_VERSION": "4593.2.5+kiln-1", "FLATCAR_VERSION_ID": "4593.2.5", "FLATCAR_BUILD_ID": "kiln-1",
           "FLATCAR_SDK_VERSION": "4593.2.5", "channel": "developer", "official": False}


def _open(tmp_path):
    root = str(tmp_path)
    return r.BuildRecord.open(r.record_path(root, "amd64-usr", "4593.2.5+kiln-1"), board="amd64-usr", version=VERSION, build_root=root)


def test_stage_cycle_and_schema(tmp_path):
    art = tmp_path / "images" / "amd64-usr" / "x" / "flatcar_production_image.bin"
    art.parent.mkdir(parents=True)
    art.write_bytes(b"disk" * 1000)
    with _open(tmp_path) as rec:
        inputs = {"a": 1}
        rec.begin("image", inputs, r.digest(inputs))
        rec.finish("image", [r.describe_output(str(tmp_path), str(art), "generic_image")])
        assert rec.is_current("image", r.digest(inputs)) == (True, "passed with the same inputs and its outputs verify")
        assert rec.is_current("image", r.digest({"a": 2}))[0] is False
    data = json.load(open(r.record_path(str(tmp_path), "amd64-usr", "4593.2.5+kiln-1")))
    jsonschema.validate(data, SCHEMA)
    assert data["stages"]["image"]["outputs"][0]["path"] == "images/amd64-usr/x/flatcar_production_image.bin"


def test_tampered_output_is_not_current(tmp_path):
    art = tmp_path / "f.bin"
    art.write_bytes(b"x" * 100)
    with _open(tmp_path) as rec:
        rec.begin("image", {}, r.digest({}))
        rec.finish("image", [r.describe_output(str(tmp_path), str(art), "generic_image")])
        art.write_bytes(b"y" * 100)  # same size, other content
        ok, reason = rec.is_current("image", r.digest({}))
        assert not ok and "changed content" in reason
        art.unlink()
        ok, reason = rec.is_current("image", r.digest({}))
        assert not ok and "missing" in reason


def test_result_digest_ignores_timestamps(tmp_path):
    art = tmp_path / "f.bin"
    art.write_bytes(b"x")
    with _open(tmp_path) as rec:
        rec.begin("packages", {}, r.digest({}))
        rec.finish("packages", [r.describe_output(str(tmp_path), str(art), "other")])
        first = rec.stage_result_digest("packages")
        rec.begin("packages", {}, r.digest({}))
        rec.finish("packages", [r.describe_output(str(tmp_path), str(art), "other")])
        assert rec.stage_result_digest("packages") == first
        assert rec.stage("packages")["attempts"] == 2


def _try_open(path, queue):
    try:
        r.BuildRecord.open(path, board="amd64-usr", version=VERSION)
        queue.put("opened")
    except r.RecordLocked as exc:
        queue.put(str(exc))


def test_concurrent_writer_is_refused(tmp_path):
    with _open(tmp_path) as rec:
        queue = multiprocessing.Queue()
        proc = multiprocessing.Process(target=_try_open, args=(rec.path, queue))
        proc.start()
        proc.join(30)
        msg = queue.get(timeout=5)
    assert "being written by another kiln task" in msg and "pid=" in msg
    # after close the record opens again
    with _open(tmp_path):
        pass


def test_failed_stage_keeps_other_stages(tmp_path):
    art = tmp_path / "a"
    art.write_bytes(b"a")
    with _open(tmp_path) as rec:
        rec.begin("packages", {}, r.digest({}))
        rec.finish("packages", [r.describe_output(str(tmp_path), str(art), "other")])
        rec.begin("image", {"x": 1}, r.digest({"x": 1}))
        rec.fail("image", "build_image failed: see the log")
        assert rec.stage("packages")["status"] == "passed"
        assert rec.stage("image")["status"] == "failed"
        assert rec.is_current("packages", r.digest({}))[0]


def test_unknown_schema_version_is_refused(tmp_path):
    path = r.record_path(str(tmp_path), "amd64-usr", "1.2.3")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as fh:
        json.dump({"kind": r.KIND, "schema_version": 99}, fh)
    with pytest.raises(r.RecordError, match="schema version 99"):
        r.BuildRecord.open(path, board="amd64-usr")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    with _open(tmp_path) as rec:
        for i in range(5):
            rec.begin("s%d" % i, {}, r.digest({}))
    files = os.listdir(os.path.dirname(rec.path))
    assert sorted(f for f in files if not f.startswith("logs")) == ["build-record.json", "build-record.json.lock"]
