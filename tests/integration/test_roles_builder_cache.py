"""The builder and cache roles converge on a netns fleet host, a second converge is changed=0,
and their refusals/reports are clear.  Root only (network namespaces + sshd per host)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fleet.harness import fleet_fixture, skip_reason  # noqa: E402
from tests.kiln_testlib import ensure_collection_path  # noqa: E402

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

ANSIBLE_BIN = Path("/work/venv-kiln/bin")
if not (ANSIBLE_BIN / "ansible-playbook").exists():
    ANSIBLE_BIN = Path(sys.executable).parent

PUSH_USER = "kiln-cache-t%d" % (os.getpid() % 10000)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    yield from fleet_fixture(tmp_path_factory.mktemp("rolefleet"), name_prefix="krl",
                             hosts={"b-arm64": {"groups": ["builders_arm64", "builders"]},
                                    "cache": {"groups": ["caches"]}},
                             ansible_bin=ANSIBLE_BIN)
    subprocess.run(["userdel", "-r", PUSH_USER], capture_output=True, check=False)


def _env():
    return {"ANSIBLE_COLLECTIONS_PATH": ensure_collection_path(), "ANSIBLE_NOCOLOR": "1"}


def _play(fleet, name, text, *args):
    path = fleet.workdir / name
    path.write_text(textwrap.dedent(text))
    return fleet.ansible_playbook(str(path), *args, env=_env(), timeout=600)


def _recap(out, host):
    m = re.search(r"^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)" % re.escape(host), out, re.M)
    assert m, out
    return dict(zip(["ok", "changed", "unreachable", "failed"], map(int, m.groups())))


BUILDER_PLAY = """
- name: Builder role
  hosts: b-arm64
  gather_facts: false
  roles:
    - role: kiln.flatcar.builder
      vars:
        builder_workdir: "{{ kiln_host_root }}/kiln"
        builder_cache_dir: "{{ kiln_host_root }}/kiln-cache"
        builder_board: arm64-usr
        builder_binfmt_mount: false
        # fleet hosts have no route to package mirrors: the emulator package is not installed here
        builder_binfmt_packages: []
        builder_min_free_gb: 1
        builder_min_mem_gb: 1
        builder_state_dir: "{{ kiln_host_root }}/host-state"
  post_tasks:
    - name: Show the binfmt state
      ansible.builtin.debug:
        msg: "binfmt={{ builder_binfmt_state }} free={{ builder_free_gb }} mem={{ builder_mem_gb }}"
"""


def _task_result(out, task, host):
    """'ok', 'changed' or 'skipping' for ``host`` in the first TASK [task] block of ``out`` (task: 'role : name')."""
    block = out.split("TASK [%s]" % task, 1)[1].split("TASK [", 1)[0]
    m = re.search(r"^(ok|changed|skipping): \[%s\]" % re.escape(host), block, re.M)
    return m.group(1) if m else block


def test_builder_converges_twice(fleet):
    first = _play(fleet, "builder.yml", BUILDER_PLAY)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (fleet.host_root("b-arm64") / "kiln").is_dir()
    binfmt_mounted = os.path.exists("/proc/sys/fs/binfmt_misc/register")
    if not binfmt_mounted:
        assert "binfmt=binfmt_misc not mountable" in first.stdout
        assert "aarch64 binaries cannot run" in first.stdout
    second = _play(fleet, "builder.yml", BUILDER_PLAY)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _recap(second.stdout, "b-arm64")["changed"] == 0, second.stdout
    # the packages are recorded as installed by this role: apt is not asked again, the preflight still runs
    install = "kiln.flatcar.builder : Install the container engine and build tools (Debian/Ubuntu)"
    assert _task_result(second.stdout, install, "b-arm64") == "skipping", second.stdout
    assert "TASK [kiln.flatcar.builder : Preflight the host" in second.stdout
    assert (fleet.host_root("b-arm64") / "host-state" / "builder.json").is_file()


def test_builder_refuses_below_minimum(fleet):
    res = _play(fleet, "builder-small.yml", BUILDER_PLAY.replace("builder_min_free_gb: 1", "builder_min_free_gb: 100000"))
    assert res.returncode != 0
    assert "below the builder minimums" in res.stdout and "builder_min_free_gb=100000" in res.stdout, res.stdout


def test_builder_requires_binfmt_when_asked(fleet):
    if os.path.exists("/proc/sys/fs/binfmt_misc/register"):
        pytest.skip("binfmt_misc is mounted on this machine")
    res = _play(fleet, "builder-binfmt.yml",
                BUILDER_PLAY.replace("builder_binfmt_mount: false", "builder_binfmt_mount: false\n        builder_binfmt_required: true"))
    assert res.returncode != 0
    assert "cannot register qemu-user-static for aarch64" in res.stdout and "mount binfmt_misc" in res.stdout, res.stdout


CACHE_PLAY = """
- name: Cache role
  hosts: cache
  gather_facts: false
  roles:
    - role: kiln.flatcar.cache
      vars:
        cache_root: "{{ kiln_host_root }}/cache"
        cache_nginx_prefix: "{{ kiln_host_root }}/cache-nginx"
        cache_nginx_mode: direct
        cache_nginx_user: root  # pytest tmp dirs are 0700
        cache_listen: ["{{ ansible_host }}:8080"]
        cache_push_user: %(user)s
        cache_push_home: "{{ kiln_host_root }}/push-home"
        cache_push_keys: ["{{ lookup('ansible.builtin.file', kiln_ssh_key + '.pub') }}"]
        cache_retention_keep: 2
        cache_state_dir: "{{ kiln_host_root }}/host-state"
""" % {"user": PUSH_USER}


def test_cache_converges_twice_serves_and_prunes(fleet):
    root = fleet.host_root("cache") / "cache"
    first = _play(fleet, "cache.yml", CACHE_PLAY)
    assert first.returncode == 0, first.stdout + first.stderr
    # layout + content served over HTTP (from the controller netns)
    pkgs = root / "boards" / "amd64-usr" / "4593.2.5" / "pkgs"
    pkgs.mkdir(parents=True)
    (pkgs / "Packages").write_text("PACKAGES: 1\n")
    cont = root / "containers" / "4593.2.5"
    cont.mkdir(parents=True)
    (cont / "flatcar-sdk-all-4593.2.5.id").write_text("abc\n")
    url = "http://%s:8080" % fleet.ip("cache")
    for path, ctype in (("/boards/amd64-usr/4593.2.5/pkgs/Packages", "text/plain"),
                        ("/containers/4593.2.5/flatcar-sdk-all-4593.2.5.id", "text/plain")):
        r = fleet.run_controller(["curl", "-sS", "-D-", "-o", "/dev/null", url + path], timeout=30)
        assert " 200 " in r.stdout.splitlines()[0] and ctype in r.stdout, r.stdout + r.stderr
    r = fleet.run_controller(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url + "/boards/"], timeout=30)
    assert r.stdout in ("403", "404"), "directory listings must be off"
    keys = (Path(fleet.host_root("cache")) / "push-home" / ".ssh" / "authorized_keys").read_text()
    assert 'restrict,command="/usr/bin/rrsync %s"' % root in keys
    state = fleet.host_root("cache") / "host-state" / "cache.json"
    assert state.is_file() and oct(state.stat().st_mode & 0o777) == "0o600"
    second = _play(fleet, "cache.yml", CACHE_PLAY)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _recap(second.stdout, "cache")["changed"] == 0, second.stdout
    # prepared as asked: the preparation is skipped, whether nginx runs is still checked
    assert _task_result(second.stdout, "kiln.flatcar.cache : Install nginx and rsync", "cache") == "skipping", second.stdout
    assert _task_result(second.stdout, "kiln.flatcar.cache : Write nginx.conf (direct mode)", "cache") == "skipping", second.stdout
    assert _task_result(second.stdout, "kiln.flatcar.cache : Check whether the direct-mode nginx runs (pid file)", "cache") == "ok"
    # retention: newest 2 versions per board survive
    for v in ("4593.1.0", "4593.3.0", "4600.0.0"):
        (root / "boards" / "amd64-usr" / v / "pkgs").mkdir(parents=True)
    third = _play(fleet, "cache.yml", CACHE_PLAY)
    assert third.returncode == 0, third.stdout
    left = sorted(os.listdir(root / "boards" / "amd64-usr"))
    assert left == ["4593.3.0", "4600.0.0"], left
    fourth = _play(fleet, "cache.yml", CACHE_PLAY)
    assert _recap(fourth.stdout, "cache")["changed"] == 0, fourth.stdout
    # an input changes (nginx's worker count): the preparation runs again and nginx gets the new configuration
    three_workers = CACHE_PLAY.replace("cache_retention_keep: 2", "cache_retention_keep: 2\n        cache_nginx_worker_processes: 3")
    fifth = _play(fleet, "cache.yml", three_workers)
    assert fifth.returncode == 0, fifth.stdout
    assert _task_result(fifth.stdout, "kiln.flatcar.cache : Write nginx.conf (direct mode)", "cache") == "changed", fifth.stdout
    assert "worker_processes 3;" in (fleet.host_root("cache") / "cache-nginx" / "nginx.conf").read_text()
    # an nginx that died is started again even while the preparation is skipped
    pid = int((fleet.host_root("cache") / "cache-nginx" / "nginx.pid").read_text())
    os.kill(pid, 15)
    for _unused in range(50):
        if not (fleet.host_root("cache") / "cache-nginx" / "nginx.pid").exists():
            break
        time.sleep(0.1)
    sixth = _play(fleet, "cache.yml", three_workers)
    assert sixth.returncode == 0, sixth.stdout
    assert _task_result(sixth.stdout, "kiln.flatcar.cache : Write nginx.conf (direct mode)", "cache") == "skipping", sixth.stdout
    assert _task_result(sixth.stdout, "kiln.flatcar.cache : Start nginx directly (no init system)", "cache") == "changed", sixth.stdout
    r = fleet.run_controller(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              url + "/boards/amd64-usr/4600.0.0/pkgs/"], timeout=30)
    assert r.stdout in ("403", "404"), r.stdout
    fleet.assert_no_root_ns_leak()
