"""kiln.flatcar.build_lock through real ansible-playbook runs on localhost."""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kiln_testlib import run_module  # noqa: E402


def lock(tmp_path, owner, **kw):
    args = dict(dir=str(tmp_path / "locks"), board="arm64-usr", version="4593.2.5+kiln-1", owner=owner)
    args.update(kw)
    return run_module("kiln.flatcar.build_lock", args)[0]


def test_acquire_refuse_renew_release(tmp_path):
    first = lock(tmp_path, "run-a")
    assert first["changed"] and first["held"] and first["holder"]["owner"] == "run-a"
    again = lock(tmp_path, "run-a")                    # the same run resumes: renewed, not changed
    assert not again["changed"] and again["held"]
    other = lock(tmp_path, "run-b")
    assert other.get("failed") and "locked by run-a" in other["msg"] and "\n" not in other["msg"]
    kept = lock(tmp_path, "run-b", state="released")   # another owner's live lease is not released
    assert not kept["changed"] and os.path.exists(first["path"])
    query = lock(tmp_path, "run-a", state="query")
    assert query["held"] and not query["changed"]
    gone = lock(tmp_path, "run-a", state="released")
    assert gone["changed"] and not os.path.exists(first["path"])
    assert not lock(tmp_path, "run-a", state="released")["changed"]


def test_stale_lease_is_taken_over(tmp_path):
    first = lock(tmp_path, "run-a", ttl=1)
    time.sleep(1.5)
    second = lock(tmp_path, "run-b")
    assert second["changed"] and second["held"] and second["taken_over_from"]["owner"] == "run-a"
    with open(second["path"]) as fh:
        assert json.load(fh)["owner"] == "run-b"


def test_force_and_check_mode(tmp_path):
    lock(tmp_path, "run-a")
    forced = lock(tmp_path, "run-b", force=True)
    assert forced["held"] and forced["taken_over_from"]["owner"] == "run-a"
    res, _run = run_module("kiln.flatcar.build_lock", dict(dir=str(tmp_path / "l2"), board="amd64-usr",
                                                           version="4593.2.5", owner="x"), check=True)
    assert res["changed"] and not os.path.exists(res["path"])
    # the version names the lease file: the one version validator, canonical FLATCAR_VERSION only
    for version, why in (("../../etc", "malformed version"), ("4593.2.5+x/../../../etc", "malformed build id"),
                         ("stable-4593.2.5", "is not a FLATCAR_VERSION")):
        bad = lock(tmp_path, "x", version=version)
        assert bad.get("failed") and why in bad["msg"] and "\n" not in bad["msg"], bad
    assert not os.path.exists(tmp_path / "etc") and not os.path.exists(tmp_path / "locks" / "amd64-usr")
