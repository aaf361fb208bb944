"""kiln.flatcar.kola with the stand-in kola (tests/standin_sdk/kola/kola): flags, TAP merge, retries of
failed tests only, flaky detection, JUnit XML."""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET

import pytest

from kiln_testlib import REPO, run_module

KOLA = os.path.join(REPO, "tests", "standin_sdk", "kola", "kola")
TARGET_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
ENV = {"ANSIBLE_PYTHON_INTERPRETER": TARGET_PYTHON}
TESTS = ["cl.basic", "cl.filesystem", "cl.internet", "cl.locksmith.cluster", "docker.base"]


@pytest.fixture
def setup(tmp_path):
    image = tmp_path / "flatcar_production_image.bin"
    image.write_bytes(b"\0" * 1024)
    code = tmp_path / "flatcar_production_qemu_uefi_efi_code.qcow2"
    code.write_bytes(b"code")
    vars_ = tmp_path / "flatcar_production_qemu_uefi_efi_vars.qcow2"
    vars_.write_bytes(b"vars")
    return {"dir": tmp_path, "image": str(image), "code": str(code), "vars": str(vars_)}


def kola(setup, plan, **args):
    plan_path = setup["dir"] / "plan.json"
    plan = dict(plan)
    plan.setdefault("tests", TESTS)
    plan.setdefault("log", str(setup["dir"] / "invocations.jsonl"))
    plan_path.write_text(json.dumps(plan))
    base = {"kola": KOLA, "board": "amd64-usr", "image": setup["image"], "firmware": setup["code"],
            "ovmf_vars": setup["vars"], "output_dir": str(setup["dir"] / "out"),
            "environment": {"KOLA_STANDIN_PLAN": str(plan_path)}}
    base.update(args)
    res, _run = run_module("kiln.flatcar.kola", base, env=ENV)
    return res


def invocations(setup):
    with open(setup["dir"] / "invocations.jsonl") as fh:
        return [json.loads(line) for line in fh]


def test_all_pass_first_time(setup):
    res = kola(setup, {}, tests=["cl.*"], parallel=2, image_version="4593.2.5")
    assert not res.get("failed"), res.get("msg")
    assert res["success"] and res["failed_tests"] == [] and res["flaky_tests"] == []
    assert res["passed_tests"] == ["cl.basic", "cl.filesystem", "cl.internet", "cl.locksmith.cluster"]
    assert len(res["runs"]) == 1
    inv = invocations(setup)
    assert len(inv) == 1
    flags = inv[0]["flags"]
    assert flags["--board"] == "amd64-usr" and flags["--platform"] == "qemu" and flags["--parallel"] == "2"
    assert flags["--qemu-image"] == setup["image"] and flags["--qemu-firmware"] == setup["code"]
    assert flags["--qemu-ovmf-vars"] == setup["vars"] and flags["--image-version"] == "4593.2.5"
    assert flags["--tapfile"].endswith("run-1.tap") and flags["--output-dir"].endswith("run-1")
    assert inv[0]["globs"] == ["cl.*"]
    assert os.path.isfile(res["tapfile"]) and os.path.isfile(res["junit"])


def test_retries_only_failed_tests_and_reports_flaky(setup):
    plan = {"fail": {"cl.filesystem": [1], "cl.internet": [1, 2], "docker.base": [1]}}
    res = kola(setup, plan, tests=["cl.*", "docker.base"], max_retries=4, platform="qemu-unpriv")
    assert not res.get("failed"), res.get("msg")
    assert res["success"]
    assert sorted(res["flaky_tests"]) == ["cl.filesystem", "cl.internet", "docker.base"]
    assert res["failed_tests"] == []
    inv = invocations(setup)
    assert [sorted(i["globs"]) for i in inv] == [["cl.*", "docker.base"],
                                                 ["cl.filesystem", "cl.internet", "docker.base"],
                                                 ["cl.internet"]]
    assert all(i["flags"]["--platform"] == "qemu-unpriv" for i in inv)
    tests = {t["name"]: t for t in res["tests"]}
    assert tests["cl.basic"]["attempts"] == 1 and tests["cl.basic"]["status"] == "passed"
    assert tests["cl.internet"]["attempts"] == 3 and tests["cl.internet"]["status"] == "flaky"
    assert "stand-in failure of cl.internet (attempt 1" in tests["cl.internet"]["runs"][0]["diagnostic"]
    # merged TAP: every test ok; JUnit: flaky failures recorded, no failures
    tap = open(res["tapfile"]).read()
    assert "not ok" not in tap and "ok - cl.internet" in tap and "attempts: 3" in tap
    suite = ET.parse(res["junit"]).getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.get("tests") == "5"
    case = [c for c in suite.findall("testcase") if c.get("name") == "cl.internet"][0]
    assert len(case.findall("flakyFailure")) == 2


def test_never_passing_test_fails_after_max_retries(setup):
    # max_retries counts every run, like MAX_RETRIES in ci-automation/test.sh (`seq "${retries}"`)
    res = kola(setup, {"fail": {"cl.filesystem": "always", "cl.basic": [1]}}, tests=["cl.basic", "cl.filesystem"],
               max_retries=3)
    assert res["failed"] is True  # the task failed
    assert res["success"] is False and res["failed_tests"] == ["cl.filesystem"]
    assert "cl.filesystem" in res["msg"] and "never passed in 3 runs" in res["msg"]
    assert res["flaky_tests"] == ["cl.basic"]
    assert len(invocations(setup)) == 3
    tap = open(res["tapfile"]).read()
    assert "not ok - cl.filesystem" in tap and "ok - cl.basic" in tap
    suite = ET.parse(res["junit"]).getroot().find("testsuite")
    assert suite.get("failures") == "1"
    bad = [c for c in suite.findall("testcase") if c.get("name") == "cl.filesystem"][0]
    assert bad.find("failure") is not None and len(bad.findall("rerunFailure")) == 2
    assert res["log_tail"] and "\n" not in res["msg"]


def test_one_run_means_no_rerun(setup):
    res = kola(setup, {"fail": {"cl.basic": [1]}}, tests=["cl.basic"], max_retries=1)
    assert res["failed"] is True and len(invocations(setup)) == 1 and "in 1 runs" in res["msg"]


def test_max_retries_counts_total_runs_like_flatcar(setup):
    # Flatcar's MAX_RETRIES=2 makes two runs in all; a test failing twice then passing never passes
    res = kola(setup, {"fail": {"cl.basic": [1, 2]}}, tests=["cl.basic"], max_retries=2)
    assert res["failed"] is True and len(invocations(setup)) == 2 and "never passed in 2 runs" in res["msg"]
    res = kola(setup, {}, tests=["cl.basic"], max_retries=0)
    assert res["failed"] is True and "must be at least 1" in res["msg"] and len(invocations(setup)) == 2


def test_crash_without_tap_fails_with_log(setup):
    res = kola(setup, {"fail": {"cl.basic": [1]}, "crash_on_runs": [2]}, tests=["cl.basic"])
    assert res["failed"] is True
    assert "kola run 2 exited with rc=3 without writing its TAP" in res["msg"]
    assert any("simulated crash" in line for line in res["log_tail"])
    assert len(res["runs"]) == 2


def test_bad_flag_surfaces(setup):
    res = kola(setup, {}, tests=["cl.basic"], extra_args=["--no-such-flag"])
    assert res["failed"] is True and "without writing its TAP" in res["msg"]
    assert any("unknown flag: --no-such-flag" in line for line in res["log_tail"])


def test_missing_image_and_check_mode(setup):
    res = kola(setup, {}, image=str(setup["dir"] / "nope.bin"))
    assert res["failed"] is True and "does not exist" in res["msg"]
    plan_path = setup["dir"] / "plan.json"
    plan_path.write_text(json.dumps({"log": str(setup["dir"] / "invocations.jsonl")}))
    res, _run = run_module("kiln.flatcar.kola", {"kola": KOLA, "board": "arm64-usr", "image": setup["image"],
                                                 "output_dir": str(setup["dir"] / "out"),
                                                 "environment": {"KOLA_STANDIN_PLAN": str(plan_path)}},
                           env=ENV, check=True)
    assert not res.get("failed") and res["changed"]
    assert "--board=arm64-usr" in res["cmd"] and "cl.*" in res["cmd"]
    assert not os.path.exists(setup["dir"] / "invocations.jsonl")
