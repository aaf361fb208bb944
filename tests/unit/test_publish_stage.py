# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""publish on the stage engine, in-process with the local backend: the record is opened once; a publish that
records its stage holds the lock until it finishes (and releases it); an exception injected inside the run, before
and after ``begin``, fails the stage with one line and releases the lock; check mode and verify only read it."""

from __future__ import annotations

import json

import pytest


from ansible_collections.kiln.flatcar.plugins.module_utils import _pub_backends
from ansible_collections.kiln.flatcar.plugins.module_utils import _record as r
from ansible_collections.kiln.flatcar.plugins.modules import publish

from module_testlib import call_module, lock_is_free
from test_publish_parts import write_build

STAGE = "publish:mirror"


def call_publish(args, capsys, check=False):
    return call_module(publish, args, capsys, name="publish", check=check)


def _boom(*_args, **_kwargs):
    raise RuntimeError("injected: disk on fire")


@pytest.fixture()
def build(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    path, _root = write_build(tmp_path)
    return path, {"record_path": path, "backend": "local", "base": str(tmp_path / "mirror")}


def test_publish_records_its_stage_holding_the_lock_until_finish(build, capsys, monkeypatch):
    path, args = build
    seen = []
    real_commit = _pub_backends.LocalBackend.commit

    def commit(self, pending):
        seen.append(lock_is_free(path))
        return real_commit(self, pending)

    monkeypatch.setattr(_pub_backends.LocalBackend, "commit", commit)
    res = call_publish(args, capsys)
    assert not res.get("failed") and res["changed"], res
    assert seen == [False]  # locked while the files went up
    entry = json.load(open(path, encoding="utf-8"))["stages"][STAGE]
    assert entry["status"] == "passed" and entry["input_digest"] and entry["log_path"] == res["log_path"]
    assert res["log_path"].endswith("/logs/publish_mirror.log") and lock_is_free(path)
    # rerun: nothing to do, nothing written
    before = open(path, encoding="utf-8").read()
    res = call_publish(args, capsys)
    assert res["changed"] is False and open(path, encoding="utf-8").read() == before and lock_is_free(path)


@pytest.mark.parametrize("where", ["before_begin", "after_begin"])
def test_injected_exception_fails_the_publish_stage(build, capsys, monkeypatch, where):
    path, args = build
    if where == "before_begin":
        monkeypatch.setattr(publish, "build_manifest", _boom)
    else:
        monkeypatch.setattr(_pub_backends.LocalBackend, "transfer", _boom)
    res = call_publish(args, capsys)
    assert res["failed"] and res["msg"] == "kiln.flatcar.publish: stage %s failed with RuntimeError: injected: disk on fire" % STAGE
    assert "\n" not in res["msg"] and "exception" not in res and res["record_path"] == path
    data = json.load(open(path, encoding="utf-8"))
    entry = data["stages"][STAGE]
    assert entry["status"] == "failed" and entry["message"] == res["msg"]
    assert (entry["input_digest"] is not None) == (where == "after_begin")
    assert data["stages"]["sign"]["status"] == "passed" and lock_is_free(path)


@pytest.mark.parametrize("mode", ["check", "verify", "record_publish_false"])
def test_readers_never_write_the_record(build, capsys, monkeypatch, mode):
    path, args = build
    if mode == "verify":
        assert not call_publish(args, capsys).get("failed")
    before = open(path, encoding="utf-8").read()
    extra = {"verify": {"mode": "verify"}, "record_publish_false": {"record_publish": False}}.get(mode, {})
    monkeypatch.setattr(r.BuildRecord, "_lock", _boom)  # a reader never takes the lock
    res = call_publish(dict(args, **extra), capsys, check=mode == "check")
    assert not res.get("failed"), res
    assert open(path, encoding="utf-8").read() == before
