"""Integration tests of the network-namespace fleet harness (tests/fleet/harness.py).

Root only: creates network namespaces, a root-ns blackhole route and sshd processes,
and removes them all again.  Ansible runs inside the fleet's controller netns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fleet.harness import (  # noqa: E402
    NETNS_DIR, REGISTRY_DIR, ROUTE_PROTO, Fleet, FleetError, cleanup_stale, fleet_fixture,
    pids_in_netns, skip_reason,
)

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

ANSIBLE_BIN = Path("/work/venv-kiln/bin")
if not (ANSIBLE_BIN / "ansible-playbook").exists():
    ANSIBLE_BIN = Path(sys.executable).parent

HOSTS = {
    "b-amd64": {"groups": ["builders_amd64", "builders"]},
    "signer": {"groups": ["signers"]},
    "mirror": {"groups": ["mirrors", "caches"]},
}


def _blackhole_routes():
    out = subprocess.run(["ip", "-j", "route", "show", "proto", ROUTE_PROTO],
                         capture_output=True, text=True, check=True).stdout
    return {r["dst"] for r in json.loads(out or "[]")}


def _procs_mentioning(text):
    hits = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                hits.append((int(entry), cmd))
    return hits


def assert_fleet_gone(fleet):
    leftovers = [ns for ns in [fleet.ctl_ns, *fleet.host_ns.values()] if (NETNS_DIR / ns).exists()]
    assert not leftovers, f"namespaces left: {leftovers}"
    assert str(fleet.subnet) not in _blackhole_routes(), "blackhole route left behind"
    assert not _procs_mentioning(str(fleet.workdir)), "processes (sshd/ssh) left behind"
    assert not (REGISTRY_DIR / f"{fleet.fleet_id}.json").exists(), "registry entry left behind"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    gen = fleet_fixture(tmp_path_factory.mktemp("fleet"), name_prefix="kft", hosts=HOSTS,
                        ansible_bin=ANSIBLE_BIN)
    f = next(gen, None)
    assert f is not None, "fleet did not come up"
    yield f
    next(gen, None)                     # teardown
    assert_fleet_gone(f)


def _ok(res):
    assert res.returncode == 0, f"rc={res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


def test_layout_and_safety_guard(fleet):
    assert fleet.subnet.prefixlen == 24 and str(fleet.subnet).startswith("10.99.")
    assert [fleet.ip(h) for h in HOSTS] == [str(fleet.subnet[11 + i]) for i in range(3)]
    # the root netns drops fleet addresses; nothing refers to them from there
    fleet.assert_no_root_ns_leak()
    # exec_on really runs in the host's netns, which only knows the fleet subnet
    out = _ok(fleet.exec_on("signer", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"])).stdout
    assert f"{fleet.ip('signer')}/24" in out
    routes = _ok(fleet.exec_on("signer", ["ip", "route"])).stdout
    assert "default" not in routes
    routes = _ok(fleet.run_controller(["ip", "route"])).stdout
    assert "default" not in routes
    for host in HOSTS:
        root = fleet.host_root(host)
        assert root.is_dir() and root == fleet.workdir / "hosts" / host


def test_ping_all(fleet):
    res = _ok(fleet.ansible("all", "-m", "ansible.builtin.ping"))
    for host in HOSTS:
        assert f"{host} | SUCCESS" in res.stdout
    report = fleet.assert_no_root_ns_leak()
    # the ControlPersist masters exist and live in the controller netns
    ctl_ino = os.stat(NETNS_DIR / fleet.ctl_ns).st_ino
    assert len(report["controller_ssh_pids"]) >= len(HOSTS)
    for pid in report["controller_ssh_pids"]:
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == ctl_ino
    for host in HOSTS:
        assert fleet.control_socket(host).exists()


ASYNC_PLAY = textwrap.dedent("""\
    - name: async fire-and-forget on every host
      hosts: all
      gather_facts: false
      tasks:
        - name: start job
          ansible.builtin.shell: "sleep 2; echo {{ inventory_hostname }} > {{ kiln_host_root }}/async-done"
          async: 60
          poll: 0
          register: job
        - name: wait for job
          ansible.builtin.async_status:
            jid: "{{ job.ansible_job_id }}"
          register: st
          until: st.finished
          retries: 30
          delay: 1
        - name: drop job file
          ansible.builtin.async_status:
            jid: "{{ job.ansible_job_id }}"
            mode: cleanup
        - name: read result
          ansible.builtin.slurp:
            src: "{{ kiln_host_root }}/async-done"
          register: done
        - name: check
          ansible.builtin.assert:
            that: (done.content | b64decode | trim) == inventory_hostname
""")


def test_async_playbook(fleet, tmp_path):
    pb = tmp_path / "async.yml"
    pb.write_text(ASYNC_PLAY)
    res = _ok(fleet.ansible_playbook(pb))
    for host in HOSTS:
        assert (fleet.host_root(host) / "async-done").read_text().strip() == host
        assert f"{host}" in res.stdout and "failed=0" in res.stdout
    assert "unreachable=0" in res.stdout
    fleet.assert_no_root_ns_leak()


def test_host_to_host_ssh(fleet, tmp_path):
    signer = fleet.ip("signer")
    # directly, with the builder's per-host ssh config (shared client key)
    _ok(fleet.exec_on("b-amd64", ["ssh", "-F", fleet.ssh_config("b-amd64"), f"root@{signer}", "true"]))
    # from an Ansible task on the builder, with the documented kiln_ssh_key var;
    # SSH_CLIENT on the signer proves the connection came from the builder's address
    pb = tmp_path / "h2h.yml"
    pb.write_text(textwrap.dedent("""\
        - hosts: builders_amd64
          gather_facts: false
          tasks:
            - ansible.builtin.command:
                argv: [ssh, -i, "{{ kiln_ssh_key }}", -o, BatchMode=yes, -o, StrictHostKeyChecking=no,
                       -o, UserKnownHostsFile=/dev/null, -o, LogLevel=ERROR,
                       "root@{{ hostvars[groups.signers[0]].ansible_host }}", 'echo "$SSH_CLIENT"']
                expand_argument_vars: false     # $SSH_CLIENT is expanded on the signer
              register: out
            - ansible.builtin.assert:
                that: out.stdout.split()[0] == ansible_host
                fail_msg: "stdout={{ out.stdout }} host={{ ansible_host }}"
    """))
    _ok(fleet.ansible_playbook(pb))
    fleet.assert_no_root_ns_leak()


def test_kill_and_restart_sshd(fleet, tmp_path):
    # an async job started before sshd dies must survive it
    pb = tmp_path / "start.yml"
    pb.write_text(textwrap.dedent("""\
        - hosts: signers
          gather_facts: false
          tasks:
            - ansible.builtin.shell: "sleep 3; touch {{ kiln_host_root }}/survivor"
              async: 60
              poll: 0
              register: job
            - ansible.builtin.copy:
                content: "{{ job.ansible_job_id }}"
                dest: "{{ kiln_host_root }}/jid"
    """))
    _ok(fleet.ansible_playbook(pb))
    jid = (fleet.host_root("signer") / "jid").read_text().strip()

    fleet.kill_sshd("signer")
    assert fleet.sshd_pids("signer") == []
    assert not fleet.control_socket("signer").exists()
    res = fleet.ansible("all", "-m", "ansible.builtin.ping")
    assert res.returncode == 4, res.stdout + res.stderr          # 4: some hosts unreachable
    assert "signer | UNREACHABLE!" in res.stdout
    assert "b-amd64 | SUCCESS" in res.stdout and "mirror | SUCCESS" in res.stdout
    fleet.assert_no_root_ns_leak()

    fleet.start_sshd("signer")
    _ok(fleet.ansible("signer", "-m", "ansible.builtin.ping"))
    res = _ok(fleet.ansible("signer", "-m", "ansible.builtin.async_status", "-a", f"jid={jid}"))
    assert f'"ansible_job_id": "{jid}"' in res.stdout
    # wait for the job to finish through the fresh sshd and check its output exists
    pb2 = tmp_path / "wait.yml"
    pb2.write_text(textwrap.dedent(f"""\
        - hosts: signers
          gather_facts: false
          tasks:
            - ansible.builtin.async_status: {{jid: "{jid}"}}
              register: st
              until: st.finished
              retries: 20
              delay: 1
    """))
    _ok(fleet.ansible_playbook(pb2))
    assert (fleet.host_root("signer") / "survivor").exists()


def test_teardown_leaves_nothing(tmp_path):
    f = Fleet("kftd", hosts={"a": {"groups": ["g"]}, "b": {}}, workdir=tmp_path / "f1",
              ansible_bin=ANSIBLE_BIN)
    with f:
        assert len(pids_in_netns(f.host_ns["a"])) >= 1
        _ok(f.ansible("all", "-m", "ansible.builtin.ping"))
        # a background process inside a host netns is killed at teardown too
        _ok(f.exec_on("a", ["sh", "-c", f"setsid sleep 300 {f.workdir} </dev/null >/dev/null 2>&1 &"]))
    assert_fleet_gone(f)
    assert f.timings["up"] < 10 and f.timings["teardown"] < 10


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_teardown_on_error(tmp_path, exc):
    f = Fleet("kfte", hosts={"a": {}}, workdir=tmp_path / "f", ansible_bin=ANSIBLE_BIN)
    with pytest.raises(exc):
        with f:
            raise exc("boom")
    assert_fleet_gone(f)


def test_cleanup_stale(tmp_path):
    f = Fleet("kfts", hosts={"a": {}}, workdir=tmp_path / "f", ansible_bin=ANSIBLE_BIN)
    f.up()
    try:
        # pretend the owner crashed: point the registry at a dead process
        dead = subprocess.Popen(["true"])
        dead.wait()
        reg = REGISTRY_DIR / f"{f.fleet_id}.json"
        st = json.loads(reg.read_text())
        st["owner_pid"] = dead.pid
        reg.write_text(json.dumps(st))
        # a live fleet with another prefix is not touched
        assert cleanup_stale("kfzz") == []
        removed = cleanup_stale("kfts")
        assert f"fleet {f.fleet_id}" in removed
        f._torn_down = True
        assert_fleet_gone(f)
    finally:
        if not f._torn_down:
            f.teardown()


def test_explicit_subnet_conflict_is_refused(tmp_path):
    with Fleet("kftc", hosts={"a": {}}, workdir=tmp_path / "a", ansible_bin=ANSIBLE_BIN) as f1:
        f2 = Fleet("kftc", subnet=str(f1.subnet), hosts={"a": {}}, workdir=tmp_path / "b",
                   ansible_bin=ANSIBLE_BIN)
        with pytest.raises(FleetError):
            f2.up()
        assert_fleet_gone(f2)
        f1.assert_no_root_ns_leak()          # f1's route is untouched
    assert_fleet_gone(f1)
