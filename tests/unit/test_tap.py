"""TAP parsing, merging across kola retries, and JUnit XML (plugins/module_utils/_tap.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _tap

KOLA_TAP = """1..3
ok - cl.basic
not ok - cl.filesystem
  ---
  Error: "cluster.go:125: mount failed"
  Output: |
    line one
  ...
ok - cl.locksmith.cluster
"""


def test_parse_kola_format():
    results, plan = _tap.parse(KOLA_TAP)
    assert plan == 3
    assert [(r.name, r.ok) for r in results] == [("cl.basic", True), ("cl.filesystem", False), ("cl.locksmith.cluster", True)]
    diag = results[1].diagnostic
    assert diag.startswith('Error: "cluster.go:125: mount failed"')
    assert "line one" in diag
    assert results[0].diagnostic is None and results[2].diagnostic is None


def test_parse_numbers_directives_and_noise():
    text = "TAP version 13\n# comment\nok 1 - a.b\nnot ok 2 - c.d # SKIP no network\nnot ok 3 - e # TODO later\nBail out? no\nok 4\n"
    results, plan = _tap.parse(text)
    assert plan is None
    assert [r.name for r in results] == ["a.b", "c.d", "e", "test 4"]
    assert results[1].skipped and results[1].reason == "no network"
    assert results[2].directive == "todo"
    assert results[0].number == 1


def test_parse_crlf_and_empty():
    results, plan = _tap.parse("1..1\r\nok - x\r\n")
    assert plan == 1 and results[0].name == "x" and results[0].ok
    assert _tap.parse("") == ([], None)


def test_parse_file_missing(tmp_path):
    with pytest.raises(_tap.TapError):
        _tap.parse_file(str(tmp_path / "nope.tap"))


def _run(text):
    return _tap.parse(text)[0]


def test_merge_retry_semantics():
    m = _tap.Merged()
    m.add_run(_run("ok - a\nnot ok - b\nnot ok - c\nnot ok - d\n"))
    m.add_run(_run("ok - b\nnot ok - c\nnot ok - d\n"))
    m.add_run(_run("not ok - c\nok - d\n"))
    assert m.passed() == ["a", "b", "d"]
    assert m.flaky() == ["b", "d"]
    assert m.failed() == ["c"]
    assert not m.success
    tests = {t["name"]: t for t in m.as_list()}
    assert tests["a"]["status"] == "passed" and tests["a"]["attempts"] == 1
    assert tests["b"]["status"] == "flaky" and tests["b"]["attempts"] == 2
    assert tests["c"]["status"] == "failed" and [r["run"] for r in tests["c"]["runs"]] == [1, 2, 3]
    assert tests["d"]["runs"][-1]["ok"] is True


def test_passed_then_failed_is_not_flaky_but_passes():
    m = _tap.Merged()
    m.add_run(_run("ok - a\n"))
    m.add_run(_run("not ok - a\n"))
    t = next(iter(m))
    assert t.passed and not t.flaky and m.success


def test_missing_tests_count_as_failed_attempts():
    m = _tap.Merged()
    m.add_run(_run("not ok - a\n"), 1)
    m.add_missing(["a"], 2, "not in the TAP of run 2")
    t = next(iter(m))
    assert t.attempts[-1] == {"run": 2, "ok": False, "skipped": False, "diagnostic": "not in the TAP of run 2"}
    assert m.failed() == ["a"]


def test_empty_merge_is_not_success():
    assert not _tap.Merged().success


def test_render_tap_roundtrip(tmp_path):
    m = _tap.Merged()
    m.add_run(_run(KOLA_TAP))
    m.add_run(_run('not ok - cl.filesystem\n  ---\n  Error: "again"\n  ...\n'))
    path = _tap.write_tap(m, str(tmp_path / "out" / "results.tap"))
    results, plan = _tap.parse_file(path)
    assert plan == 3
    assert [(r.name, r.ok) for r in results] == [("cl.basic", True), ("cl.filesystem", False), ("cl.locksmith.cluster", True)]
    assert "attempts: 2" in results[1].diagnostic
    assert 'Error: "again"' in results[1].diagnostic


def test_junit(tmp_path):
    m = _tap.Merged()
    m.add_run(_run('ok - cl.basic\nnot ok - cl.flaky\n  ---\n  Error: "boom \x01"\n  ...\nnot ok - cl.bad\nnot ok - x # SKIP\n'))
    m.add_run(_run("ok - cl.flaky\nnot ok - cl.bad\n"))
    path = _tap.write_junit(m, str(tmp_path / "r.xml"), suite="kola.amd64-usr.qemu", properties={"board": "amd64-usr"})
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite.get("name") == "kola.amd64-usr.qemu"
    assert suite.get("tests") == "4" and suite.get("failures") == "2" and suite.get("skipped") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["cl.basic"].find("failure") is None and cases["cl.basic"].get("classname") == "cl"
    flaky = cases["cl.flaky"].findall("flakyFailure")
    assert len(flaky) == 1 and "boom ?" in flaky[0].text
    bad = cases["cl.bad"]
    assert bad.find("failure") is not None and len(bad.findall("rerunFailure")) == 1
    assert cases["x"].find("skipped") is not None
    assert suite.find("properties/property").get("value") == "amd64-usr"
