"""kiln.flatcar.query (JMESPath on the controller): the query pipeline.yml uses for lost hosts, through a real
ansible run (Ansible's own containers, not plain dicts), and one-line errors for bad expressions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.kiln.flatcar.plugins.filter.query import query

OUTCOME = {
    "amd64-usr": {"host": "b-amd64", "board": "amd64-usr", "ok": True, "lost": False, "record_path": "/s/a.json"},
    "arm64-usr": {"host": "b-arm64", "board": "arm64-usr", "ok": False, "lost": True, "record_path": None},
}


def test_lost_hosts_and_passed_records():
    assert query(OUTCOME, "values(@)[?lost].host") == ["b-arm64"]
    assert query(OUTCOME, "values(@)[?ok].record_path") == ["/s/a.json"]
    assert query({}, "values(@)[?lost].host") == []


@pytest.mark.parametrize("expr", ["values(@)[?lost", "", "   ", None, 5, "foo(@)"])
def test_bad_expressions_fail_in_one_line(expr):
    with pytest.raises(AnsibleFilterError) as err:
        query(OUTCOME, expr)
    assert "\n" not in str(err.value.message) and "kiln.flatcar.query" in str(err.value.message)


def test_through_a_real_ansible_run(tmp_path):
    ansible = shutil.which("ansible", path=os.path.dirname(sys.executable)) or shutil.which("ansible")
    if ansible is None:
        pytest.skip("ansible not installed in the venv: make venv")
    (tmp_path / "vars.json").write_text(json.dumps({"outcome": OUTCOME}))
    out = subprocess.run(
        [ansible, "localhost", "-c", "local", "-e", "@" + str(tmp_path / "vars.json"), "-e", "ansible_python_interpreter=" + sys.executable,
         "-m", "ansible.builtin.debug", "-a", "msg={{ outcome | kiln.flatcar.query('values(@)[?lost].host') | to_json }}"],
        capture_output=True, text=True, check=False, timeout=120, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"msg": "[\\"b-arm64\\"]"' in out.stdout, out.stdout
