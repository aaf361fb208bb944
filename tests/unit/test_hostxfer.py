# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_hostxfer.remote_python_call with a runner that runs the "remote" command locally, and SshAgent."""
import os
import shlex
import subprocess
import sys
import time

import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _mirror
from ansible_collections.kiln.flatcar.plugins.module_utils._hostxfer import SshAgent, remote_python, remote_python_call


class LocalRunner:
    """Pretends to be ssh: checks the argv shape, then runs the remote command locally with the same stdin."""

    def __init__(self):
        self.calls = []
        self.failed = None

    def capture(self, argv, env=None, data=None):
        self.calls.append((argv, env, data))
        if argv[0] == "ssh":
            assert argv[-3] == "--"
            remote = shlex.split(argv[-1])  # what the remote login shell does with the command
            try:
                proc = subprocess.run([sys.executable if remote[0] == "python3" else remote[0]] + remote[1:],
                                      input=data.encode(), capture_output=True, check=False)
            except FileNotFoundError:
                return 127, "", "sh: 1: %s: not found\n" % remote[0]
            return proc.returncode, proc.stdout.decode(), proc.stderr.decode()
        raise AssertionError(argv)

    def fail(self, msg, **extra):
        self.failed = msg
        raise RuntimeError(msg)


def test_remote_python_call_runs_the_mirror_program(tmp_path):
    runner = LocalRunner()
    board = tmp_path / "amd64-usr"
    (board / "1.0.0").mkdir(parents=True)
    spec = {"board_dir": str(board), "target": "1.0.0", "expect": None}
    rc, answer, _lines = remote_python_call(runner, ["ssh", "-o", "BatchMode=yes"], "-oProxyCommand=evil", _mirror.own_source(),
                                            {"op": "set_current", "spec": spec})
    assert rc == 0 and answer == {"ok": True, "result": {"before": None, "after": "1.0.0", "changed": True}}
    assert os.readlink(str(board / "current")) == "1.0.0"
    argv, _env, data = runner.calls[0]
    assert argv[-3:] == ["--", "-oProxyCommand=evil", "python3 -"]  # the host can never become an option
    assert b"1.0.0" not in " ".join(argv).encode() and data  # the request travels on stdin only
    rc, answer, _lines = remote_python_call(runner, ["ssh"], "h", _mirror.own_source(), {"op": "set_current", "spec": dict(spec, expect="x")})
    assert rc == 0 and answer["ok"] is False and "changed while publishing" in answer["error"]


def test_remote_python_quotes_the_interpreter_and_fails_in_one_line(tmp_path):
    runner = LocalRunner()
    rc, answer, lines = remote_python_call(runner, ["ssh"], "h", "def main(p):\n    return p\n", {"a": 1}, python="/nonexistent/py; rm -rf /")
    assert runner.calls[0][0][-1] == "'/nonexistent/py; rm -rf /' -"  # one word for the remote shell
    assert rc == 127 and answer is None and "not found" in lines[-1]
    runner = LocalRunner()
    assert remote_python(runner, ["ssh"], "h", "def main(p):\n    return {'b': p['a']}\n", {"a": 2}) == {"b": 2}
    with pytest.raises(RuntimeError):
        remote_python(runner, ["ssh"], "h", "raise SystemExit(3)\n", {})
    assert runner.failed.startswith("remote step on h failed (rc=3)")


def test_ssh_agent_keeps_the_key_off_disk_and_dies(tmp_path):
    if not (os.path.exists("/usr/bin/ssh-agent") and os.path.exists("/usr/bin/ssh-keygen")):
        pytest.skip("openssh-client not installed")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    key = (tmp_path / "k").read_text()
    os.unlink(str(tmp_path / "k"))
    work = tmp_path / "w"
    work.mkdir(mode=0o700)

    class Runner:
        def capture(self, argv, env=None, data=None):
            proc = subprocess.run(argv, input=data.encode() if data else None, capture_output=True, check=False,
                                  env=dict(os.environ, **(env or {})))
            return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    agent = SshAgent(Runner(), str(work))
    assert agent.start(key) is None
    try:
        listed = subprocess.run(["ssh-add", "-l"], env=dict(os.environ, SSH_AUTH_SOCK=agent.sock), capture_output=True, check=False)
        assert listed.returncode == 0 and b"ED25519" in listed.stdout
        assert os.listdir(str(work)) == ["agent.sock"]
        assert agent.ssh_options() == ["IdentityAgent=%s" % agent.sock, "IdentityFile=none"]
        pid = agent.pid
    finally:
        agent.close()
    assert os.listdir(str(work)) == []
    for _attempt in range(100):
        if not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError("ssh-agent %d still running" % pid)
    assert SshAgent(Runner(), str(work)).start("not a key").startswith("ssh-add refused the private key")
    assert os.listdir(str(work)) == []
