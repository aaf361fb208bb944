"""Issue 11, part A, through real ansible-playbook runs: what tests/unit/test_hardening_modules.py checks in-process
also holds when Ansible runs the module (no traceback reaches the result, no hang, no key added by a filter)."""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kiln_testlib import run_module, run_playbook  # noqa: E402


def _one_line(res, *needles):
    assert res.get("failed"), res
    # ansible-core 2.21 adds exception="(traceback unavailable)" to every failed result: a real one says Traceback
    assert "\n" not in res["msg"] and "MODULE FAILURE" not in res["msg"] and "Traceback" not in json.dumps(res), res
    assert res.get("exception") in (None, "(traceback unavailable)"), res
    for needle in needles:
        assert needle in res["msg"], res["msg"]


def test_build_lock_corrupt_lease_and_huge_ttl(tmp_path):
    lease = tmp_path / "locks" / "arm64-usr" / "4593.2.5.lock"
    lease.parent.mkdir(parents=True)
    lease.write_text('{"owner": "run-x", "expires_epoch": "abc"}')
    args = dict(dir=str(tmp_path / "locks"), board="arm64-usr", version="4593.2.5", owner="run-b")
    res, _run = run_module("kiln.flatcar.build_lock", args)
    _one_line(res, str(lease), "corrupt", "force=true")
    res, _run = run_module("kiln.flatcar.build_lock", dict(args, force=True))
    assert res["held"] and res["changed"] and json.loads(lease.read_text())["owner"] == "run-b"
    res, _run = run_module("kiln.flatcar.build_lock", dict(args, ttl=10 ** 12))
    _one_line(res, "ttl", "out of range")


def test_payload_info_fifo_fails_at_once(tmp_path):
    fifo = tmp_path / "payload.gz"
    os.mkfifo(fifo)
    start = time.monotonic()
    res, _run = run_module("kiln.flatcar.payload_info", {"path": str(fifo)}, timeout=120)
    _one_line(res, "not a regular file (a FIFO)")
    assert time.monotonic() - start < 60


def test_boot_check_refuses_qemu_debug_and_monitor_args(tmp_path):
    for extra in (["-qmp-pretty", "tcp:127.0.0.1:4444,server,nowait"], ["-gdb", "tcp::1234"], ["-s"],
                  ["-display", "vnc=:1"]):
        args = {"board": "amd64-usr", "accel": "tcg", "extra_args": extra, "cache_dir": str(tmp_path / "cache")}
        res, _run = run_module("kiln.flatcar.boot_check", args)
        _one_line(res, "extra QEMU argument %s is not allowed" % extra[0])
    res, _run = run_module("kiln.flatcar.boot_check", {"board": "amd64-usr", "timeout": -1, "cache_dir": str(tmp_path / "cache")})
    _one_line(res, "timeout -1 is out of range")


def test_update_conf_newline_cannot_add_a_key(tmp_path):
    out = tmp_path / "update.conf"
    pb = tmp_path / "pb.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "render", "ansible.builtin.copy": {
            "dest": str(out), "content": "{{ server | kiln.flatcar.update_conf(group='stable') }}"}}]}]))
    run = run_playbook(str(pb), extra_vars={"server": "https://nebraska.example/v1/update/\nGROUP=evil"})
    res = run.result("render")
    assert res.get("failed") and "SERVER" in res["msg"] and "control character" in res["msg"], res
    assert not out.exists()
    run = run_playbook(str(pb), extra_vars={"server": "https://nebraska.example/v1/update/"})
    assert run.rc == 0 and out.read_text() == "SERVER=https://nebraska.example/v1/update/\nGROUP=stable\n"
