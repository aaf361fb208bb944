"""tests/standin_sdk/dockerd.sh, the script .ci/run starts the test machine's Docker daemon with.

Fake `docker` and `dockerd` on PATH stand for the daemon: what is checked is the script's own
bookkeeping (the pid file names the daemon, a dead daemon is reported with its own log lines).
A CI run failed in 52 s because setsid forks when the caller has job control, so the recorded
pid was a launcher that had already exited and the script called a starting daemon dead.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "standin_sdk" / "dockerd.sh"

FAKE_DOCKER = """#!/bin/bash
[[ $1 == info && -e "$FAKE_DIR/ready" ]]
"""
FAKE_DOCKERD_OK = """#!/bin/bash
echo "fake dockerd starting" >&2
sleep 1
touch "$FAKE_DIR/ready"
while :; do sleep 1; done
"""
FAKE_DOCKERD_FAIL = """#!/bin/bash
echo "failed to start daemon: fake refusal" >&2
exit 1
"""


def _env(tmp_path, dockerd):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("docker", FAKE_DOCKER), ("dockerd", dockerd)):
        path = bindir / name
        path.write_text(text)
        path.chmod(0o755)
    env = dict(os.environ)
    env.update({
        "PATH": f"{bindir}:{env['PATH']}",
        "FAKE_DIR": str(tmp_path),
        "KILN_TEST_DOCKERD_PIDFILE": str(tmp_path / "kiln-dockerd.pid"),
        "KILN_TEST_DOCKERD_LOG": str(tmp_path / "dockerd.log"),
        "KILN_TEST_DOCKERD_WAIT": "20",
        "KILN_TEST_DOCKER_PIDFILE": str(tmp_path / "docker.pid"),
        "KILN_TEST_DOCKER_SOCK": str(tmp_path / "docker.sock"),
    })
    return env


def _run(env, *args, job_control=False):
    if job_control:
        # Sourced so that the shell running the script has job control on.
        argv = ["bash", "-c", f"set -m; set -- {' '.join(args)}; . {SCRIPT}"]
    else:
        argv = ["bash", str(SCRIPT), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)


def _kill_fakes(tmp_path):
    """Kill whatever fake daemon of this test is still running (a failed start must not leave one behind)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(tmp_path / "bin").encode() in cmdline:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass


@pytest.mark.parametrize("job_control", [False, True], ids=["plain", "job-control"])
def test_start_records_the_daemon_and_stop_kills_it(tmp_path, job_control):
    env = _env(tmp_path, FAKE_DOCKERD_OK)
    try:
        started = _run(env, "start", job_control=job_control)
        assert started.returncode == 0, started.stderr
        assert "dockerd started" in started.stdout
        pid = int((tmp_path / "kiln-dockerd.pid").read_text())
        assert b"dockerd" in Path(f"/proc/{pid}/cmdline").read_bytes()
        status = _run(env, "status")
        assert f"running (pid {pid}, started by dockerd.sh)" in status.stdout
        assert "already running" in _run(env, "start").stdout
        stopped = _run(env, "stop")
        assert stopped.returncode == 0 and "dockerd stopped" in stopped.stdout
    finally:
        _kill_fakes(tmp_path)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()


def test_a_dead_daemon_is_reported_with_its_own_log_lines(tmp_path):
    env = _env(tmp_path, FAKE_DOCKERD_FAIL)
    (tmp_path / "dockerd.log").write_text("an older daemon's line\n")
    try:
        result = _run(env, "start", job_control=True)
    finally:
        _kill_fakes(tmp_path)
    assert result.returncode == 1
    assert "dockerd exited; see" in result.stderr
    assert "fake refusal" in result.stderr
    assert "an older daemon's line" not in result.stderr
