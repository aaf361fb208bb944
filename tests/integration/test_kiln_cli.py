"""The kiln command (cli/) over ansible-runner, on localhost: `kiln status` from real build records, `kiln
publish` refused by the gate (exit 2), published (exit 0) and with bad input (exit 1), the JSON-lines mode parsed,
the progress block in a pseudo-terminal with the estimate from the previous run, `kiln report`, and no extra
var (a passphrase) left on disk in the run directory."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from kiln_testlib import ensure_collection_path  # noqa: E402
from test_publish import Gpg, make_build  # noqa: E402

from ansible_collections.kiln.flatcar.plugins.module_utils import _record as r  # noqa: E402

KILN = shutil.which("kiln", path=os.path.dirname(sys.executable))
pytestmark = pytest.mark.skipif(KILN is None, reason="the kiln command is not installed in the venv: make venv")


@pytest.fixture(scope="module")
def gpg():
    g = Gpg()
    yield g
    g.close()


def inventory(tmp_path, **hostvars):
    hv = dict(ansible_connection="local", ansible_python_interpreter=sys.executable, **hostvars)
    inv = tmp_path / "inventory.yml"
    inv.write_text(json.dumps({"all": {"hosts": {"localhost": hv}, "children": {"builders": {"hosts": {"localhost": {}}}}}}))
    return inv


def kiln(tmp_path, *args, timeout=300):
    ensure_collection_path()
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
    return subprocess.run([KILN, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path, check=False)


def test_status_reads_the_records(tmp_path):
    root = tmp_path / "builds"
    with r.BuildRecord.open(r.record_path(str(root), "amd64-usr", "4593.2.5+kiln-1"), board="amd64-usr",
                            version={"FLATCAR_VERSION": "4593.2.5+kiln-1"}, build_root=str(root)) as rec:
        rec.begin("packages", {}, r.digest({}))
        rec.finish("packages", [])
        rec.begin("image", {"x": 1}, r.digest({"x": 1}))
        rec.fail("image", "build_image failed with rc=1: disk full on the builder")
    inv = inventory(tmp_path, kiln_status_roots=[str(root)])
    res = kiln(tmp_path, "status", "-i", str(inv), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = json.loads(res.stdout.splitlines()[-1])["stages"]
    assert [(x["board"], x["stage"], x["status"]) for x in rows] == [("amd64-usr", "packages", "passed"), ("amd64-usr", "image", "failed")]
    text = kiln(tmp_path, "status", "-i", str(inv))
    assert text.returncode == 0 and "image" in text.stdout and "failed" in text.stdout and "disk full on the builder" in text.stdout, text.stdout


def _json_lines(out):
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_publish_exit_codes_json_lines_report_and_no_secret_on_disk(tmp_path, gpg):
    root = str(tmp_path / "tree")
    v = "4620.0.0+cli-1"
    amd = make_build(root, v, gpg, board="amd64-usr", boot=False)
    inv = inventory(tmp_path)
    base = str(tmp_path / "mirror")
    extra = ["-e", json.dumps({"kiln_version": v, "kiln_build_root": amd["build_root"], "kiln_boards": ["amd64-usr"],
                               "kiln_publish_backend": "local", "kiln_publish_base": base, "kiln_publish_signing_key": gpg.pubkey,
                               "kiln_sign_passphrase": "S3CRET-pass-4711"})]
    # the gate refuses a build without a boot check: exit 2, the refusal in the JSON lines
    res = kiln(tmp_path, "publish", "-i", str(inv), "--json", *extra)
    events = _json_lines(res.stdout)
    assert res.returncode == 2, res.stdout + res.stderr
    assert any(e["event"] == "task" and e["host"] == "localhost" for e in events)
    assert any(e["event"] == "failed" and "gate refused" in e["msg"] for e in events), events
    end = events[-1]
    assert end["event"] == "end" and end["exit_code"] == 2
    run_dir = end["run_dir"]
    # nothing of the extra vars stays on disk (the passphrase went on the command line only)
    for dirpath, _dirs, files in os.walk(run_dir):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                assert b"S3CRET-pass-4711" not in fh.read(), os.path.join(dirpath, name)
    # the override publishes: exit 0, report of the run
    res = kiln(tmp_path, "publish", "-i", str(inv), "--output", "lines", *extra, "-e", "kiln_publish_gate_override=true",
               "-e", "kiln_publish_gate_override_reason=cli-test")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kiln publish: ok (exit 0)" in res.stdout and "localhost" in res.stdout
    assert os.path.isfile(os.path.join(base, "amd64-usr", v, "version.txt")) or os.listdir(base)
    rep = kiln(tmp_path, "report", "latest")
    assert rep.returncode == 0 and "# kiln publish" in rep.stdout and "| localhost |" in rep.stdout, rep.stdout
    rep_json = json.loads(kiln(tmp_path, "report", "latest", "--format", "json").stdout)
    assert rep_json["exit_code"] == 0 and rep_json["playbook"] == "kiln.flatcar.publish"
    # bad input: exit 1 with the playbook's one-line message
    res = kiln(tmp_path, "publish", "-i", str(inv), "--output", "lines", "-e", "kiln_publish_base=" + base)
    assert res.returncode == 1 and "FAILED localhost" in res.stdout and "set kiln_flatcar_version" in res.stdout, res.stdout
    # the progress block in a terminal, with the estimate from the last successful publish
    out = _in_pty(tmp_path, [KILN, "publish", "-i", str(inv), *extra, "-e", "kiln_publish_gate_override=true",
                             "-e", "kiln_publish_gate_override_reason=cli-test"])
    assert "\x1b[2K" in out and "localhost" in out and ("est." in out or "over the last run" in out), out[-2000:]
    assert "kiln publish: ok (exit 0)" in out


def _in_pty(tmp_path, argv, timeout=300):
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp_path, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _w, _x = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("rc,failures,summary,code", [
    (0, [], None, 0),
    (2, [{"msg": "x"}], None, 1),
    (2, [{"msg": "publish gate refused amd64-usr: no passed boot check"}], None, 2),
    (2, [], {"gate": {"passed": ["amd64-usr"], "missing": ["arm64-usr"], "released": []}}, 2),
    (2, [], {"gate": {"passed": ["amd64-usr"], "missing": ["arm64-usr"], "released": ["amd64-usr"]}}, 3),
])
def test_exit_code_classes(rc, failures, summary, code):
    sys.path.insert(0, os.path.join(REPO, "cli"))
    from kiln_cli.run import exit_code
    assert exit_code(rc, failures, summary) == code
