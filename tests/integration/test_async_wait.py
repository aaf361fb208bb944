"""kiln.flatcar.async_wait: an async job is seen finished without a fixed delay, returns what async_status returns,
passes a failed job's failure on, keeps an until loop going for a long job, and cleans up its status file."""

from __future__ import annotations

import json
import os

from kiln_testlib import ensure_collection_path, run_playbook


def _play(tmp_path, tasks):
    ensure_collection_path()
    path = tmp_path / "play.yml"
    path.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    return run_playbook(str(path), env={"ANSIBLE_ASYNC_DIR": str(tmp_path / "async")})


def test_quick_job_is_seen_at_once_and_cleaned(tmp_path):
    run = _play(tmp_path, [
        {"name": "start", "ansible.builtin.command": {"argv": ["sh", "-c", "sleep 0.3; echo done"]}, "async": 60, "poll": 0,
         "register": "job"},
        {"name": "wait", "kiln.flatcar.async_wait": {"jid": "{{ job.ansible_job_id }}", "wait": 30, "interval": 5, "cleanup": True},
         "register": "res", "until": "res.finished", "retries": 3, "delay": 0},
    ])
    assert run.rc == 0, run.stdout + run.stderr
    res = run.result("wait")
    assert res["finished"] is True and res["started"] is True and res["stdout"] == "done" and res["rc"] == 0, res
    # intervals 0.25, 0.5, 1, ...: a 0.3 s job needs a handful of polls, never a 5 s pause
    assert 1 <= res["polls"] <= 6, res
    assert res["cleaned"] is True and not os.path.exists(res["results_file"]), res


def test_failed_job_fails_the_task_with_its_own_result(tmp_path):
    run = _play(tmp_path, [
        {"name": "start", "ansible.builtin.command": {"argv": ["sh", "-c", "echo broken >&2; exit 3"]}, "async": 60, "poll": 0,
         "register": "job"},
        {"name": "wait", "kiln.flatcar.async_wait": {"jid": "{{ job.ansible_job_id }}", "wait": 30}, "register": "res",
         "until": "res.finished", "retries": 3, "delay": 0},
    ])
    assert run.rc != 0
    res = run.result("wait")
    assert res["finished"] is True and res["failed"] is True and res["rc"] == 3 and res["stderr"] == "broken", res


def test_long_job_keeps_the_until_loop_going(tmp_path):
    run = _play(tmp_path, [
        {"name": "start", "ansible.builtin.command": {"argv": ["sleep", "2.5"]}, "async": 60, "poll": 0, "register": "job"},
        {"name": "wait", "kiln.flatcar.async_wait": {"jid": "{{ job.ansible_job_id }}", "wait": 1, "interval": 0.5},
         "register": "res", "until": "res.finished", "retries": 20, "delay": 0},
    ])
    assert run.rc == 0, run.stdout + run.stderr
    res = run.result("wait")
    assert res["finished"] is True and res["attempts"] >= 2, res
    assert "cleaned" not in res and os.path.exists(res["results_file"])


def test_bad_arguments_fail_in_one_line(tmp_path):
    run = _play(tmp_path, [
        {"name": "wait", "kiln.flatcar.async_wait": {"jid": "1.2", "wait": 99999}, "register": "res"},
    ])
    assert run.rc != 0
    assert run.result("wait")["msg"] == "wait 99999.0 is not between 0 and 3600 seconds"
    # a job id is never a path: cleanup would remove what it names
    victim = tmp_path / "victim"
    victim.write_text("keep")
    run = _play(tmp_path, [
        {"name": "wait", "kiln.flatcar.async_wait": {"jid": "../victim", "cleanup": True}, "register": "res"},
    ])
    assert run.rc != 0 and run.result("wait")["msg"].startswith("jid '../victim' is invalid"), run.result("wait")
    assert victim.read_text() == "keep"
