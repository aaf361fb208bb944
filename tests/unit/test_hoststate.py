"""Prepared-state records (kiln.flatcar.host_state): a role skips its preparation only for the same inputs, a recent
record and a record that is one; anything else prepares again."""

from __future__ import annotations

import json
import os

from ansible_collections.kiln.flatcar.plugins.module_utils import _hoststate


def test_digest_is_canonical():
    assert _hoststate.digest_of({"b": [1, 2], "a": "x"}) == _hoststate.digest_of({"a": "x", "b": [1, 2]})
    assert _hoststate.digest_of({"a": [1, 2]}) != _hoststate.digest_of({"a": [2, 1]})
    assert _hoststate.digest_of({"a": "1"}) != _hoststate.digest_of({"a": 1})


def test_check_and_record(tmp_path):
    path = _hoststate.state_path(str(tmp_path / "state"), "cache")
    d1, d2 = _hoststate.digest_of({"packages": ["nginx"]}), _hoststate.digest_of({"packages": ["nginx", "rsync"]})
    assert _hoststate.check(path, d1, 86400)[:2] == (False, "no record yet")
    _hoststate.record(path, "cache", d1, now=1000.0)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert json.load(open(path))["digest"] == d1
    current, why, _rec = _hoststate.check(path, d1, 86400, now=1040.0)
    assert current and why == "unchanged for 40 s"
    assert _hoststate.check(path, d2, 86400, now=1040.0)[:2] == (False, "inputs changed")
    assert _hoststate.check(path, d1, 86400, now=1000.0 + 86401)[:2] == (False, "older than 86400 s")
    assert _hoststate.check(path, d1, 0, now=1000.0 + 10 ** 8)[0] is True          # 0: never expires
    assert _hoststate.check(path, d1, 86400, now=999.0)[:2] == (False, "recorded in the future (clock moved back)")


def test_anything_but_a_record_prepares_again(tmp_path):
    d = _hoststate.digest_of({})
    for i, content in enumerate(["", "not json", "[]", json.dumps({"digest": d, "recorded_epoch": 1}),
                                 json.dumps({"schema": _hoststate.SCHEMA, "digest": d, "recorded_epoch": True}),
                                 json.dumps({"schema": _hoststate.SCHEMA, "digest": 5, "recorded_epoch": 1})]):
        p = tmp_path / ("r%d.json" % i)
        p.write_text(content)
        current, why, rec = _hoststate.check(str(p), d, 0)
        assert current is False and rec is None and why, (content, why)
    (tmp_path / "dir.json").mkdir()
    assert _hoststate.check(str(tmp_path / "dir.json"), d, 0)[1].startswith("unreadable record")
