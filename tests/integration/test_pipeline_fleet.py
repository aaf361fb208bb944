"""The whole kiln pipeline (playbooks/pipeline.yml) over SSH on a network-namespace fleet, against the
stand-in SDK: two builders (amd64, arm64) building at the same time, a signer, a mirror that is also the
build cache.

Fault tests: a builder's sshd killed mid-build (the other architecture is published under
kiln_allow_partial_release and the run reports the lost host); a rerun after the host is back builds only the
missing architecture; a second full run is changed=0 everywhere; an artifact corrupted in transit is caught
before signing.  Root only; docker (tests/standin_sdk/dockerd.sh) must work.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fleet.harness import fleet_fixture, skip_reason  # noqa: E402
from tests.kiln_testlib import ensure_collection_path, fs_changes, fs_snapshot, run_module, vendor_dir  # noqa: E402
from tests.standin_sdk import fixture as sdk  # noqa: E402

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

ANSIBLE_BIN = Path("/work/venv-kiln/bin")
if not (ANSIBLE_BIN / "ansible-playbook").exists():
    ANSIBLE_BIN = Path(sys.executable).parent
PIPELINE = REPO / "playbooks" / "pipeline.yml"
SDK_VERSION = "4593.2.5"
VERSION = "4593.2.5+kiln-1"
ASSETS = Path(os.environ.get("KILN_TEST_CACHE", "/var/cache/kiln-test")) / "boot-assets"

HOSTS = {
    "b-amd64": {"groups": ["builders_amd64", "builders"], "vars": {"kiln_board": "amd64-usr"}},
    "b-arm64": {"groups": ["builders_arm64", "builders"], "vars": {"kiln_board": "arm64-usr"}},
    "signer": {"groups": ["signers"]},
    "mirror": {"groups": ["mirrors", "caches"]},
}


def recap(out):
    rows = {}
    for m in re.finditer(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out, re.M):
        rows[m.group(1)] = dict(zip(["ok", "changed", "unreachable", "failed"], map(int, m.groups()[1:])))
    return rows


def make_fleet_vars(fleet, origin, fid):
    hr = fleet.host_root
    vars_all = {
        "kiln_scripts_repo": origin,
        "kiln_ref": "stable-" + SDK_VERSION,
        "kiln_build_id": "kiln-1",
        "kiln_sdk_flavour": "all",
        "kiln_sdk_registry": sdk.STANDIN_REGISTRY,  # the stand-in images never carry ghcr.io/flatcar
        "kiln_image_types": ["prod"],
        "kiln_vm_formats": [],
        "kiln_boot_check_firmware": ["uefi"],
        "kiln_poll_delay": 2,
        "kiln_cache_url": "http://%s:8080" % fleet.ip("mirror"),
        "kiln_cache_push_user": "root",
        "kiln_cache_rrsync": False,
        "kiln_cache_root": str(hr("mirror") / "cache"),
        "kiln_publish_base": str(hr("mirror") / "mirror"),
        "kiln_mirror_host_key_checking": "no",
        "kiln_summary_dir": str(fleet.workdir / "summary"),
        # the run is named after the release, as an operator would (and as the demo shows it)
        "kiln_run_id": "release-" + VERSION,
        # roles
        "builder_min_free_gb": 1,
        "builder_min_mem_gb": 1,
        "builder_binfmt_mount": False,
        "builder_binfmt_packages": [],
        "cache_root": str(hr("mirror") / "cache"),
        "cache_owner": "root",
        "cache_push_user": "root",
        "cache_push_user_create": False,
        "cache_nginx_mode": "direct",
        "cache_nginx_user": "root",
        "cache_nginx_prefix": str(hr("mirror") / "cache-nginx"),
        "cache_listen": ["%s:8080" % fleet.ip("mirror")],
        "cache_retention_keep": 3,
        "kiln_signer_build_root": str(hr("signer") / "builds"),
    }
    # the fleet's hosts share this machine's file system: each keeps its prepared-state records (kiln.flatcar.host_state)
    # under its own root, as a real host keeps them in /var/lib/kiln/host-state
    per_host = {h: {"kiln_host_state_dir": str(hr(h) / "host-state")} for h in HOSTS}
    for h in ("b-amd64", "b-arm64"):
        per_host[h].update({
            "kiln_workdir": str(hr(h) / "kiln"),
            "kiln_scripts_dir": str(hr(h) / "kiln" / "scripts"),
            "kiln_sdk_container_name": "kiln-%s-%s-{{ kiln_build_id }}" % (fid, h),
        })
    return vars_all, per_host


def check_prerequisites(skip=pytest.skip):
    if not sdk.dockerd_start():
        skip("docker does not work here (tests/standin_sdk/dockerd.sh start)")
    if not (ASSETS / "amd64" / "vmlinuz").exists() or not (ASSETS / "arm64" / "vmlinuz").exists():
        prep = subprocess.run([str(REPO / "tests/standin_sdk/disk/prepare_assets.sh"), "--arch", "all"],
                              capture_output=True, text=True, check=False)
        if prep.returncode != 0:
            skip("stand-in boot assets unavailable: %s" % prep.stderr[-500:])


def prepare_fleet(work, name_prefix="kpl"):
    """Fleet + stand-in SDK origin + SDK image in the cache + builder checkouts + signer key + vars files.
    Returns (fleet, teardown_generator, fleet_id). Used by the tests and bench/bench_pipeline.py."""
    check_prerequisites()
    gen = fleet_fixture(work / "fleet", name_prefix=name_prefix, hosts=HOSTS, ansible_bin=ANSIBLE_BIN)
    fleet = next(gen)
    return fleet, gen, populate_fleet(fleet, work)


def populate_fleet(fleet, work):
    """Everything the pipeline needs on a fresh fleet; returns the fleet id (also used by hack/demo.sh)."""
    fid = fleet.fleet_id.replace("/", "-")
    origin = sdk.make_scripts_origin(work / "origin", tags=["stable-" + SDK_VERSION])
    # the SDK image in the fleet cache, as ci-automation's docker_image_to_buildcache lays it out
    sdk.ensure_sdk_image("all", SDK_VERSION, save_dir=fleet.host_root("mirror") / "cache")
    # builders: checkouts prepared for the stand-in (boot assets); the pipeline updates them
    for h in ("b-amd64", "b-arm64"):
        co = fleet.host_root(h) / "kiln" / "scripts"
        co.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", origin, str(co)], check=True)
        sdk.instantiate(co, assets_dir=ASSETS)
    # signer key (throwaway, no passphrase)
    gh = fleet.host_root("signer") / "gnupg"
    gh.mkdir(mode=0o700, parents=True)
    subprocess.run(["gpg", "--batch", "--homedir", str(gh), "--passphrase", "", "--quick-gen-key",
                    "kiln test signer <signer@example.invalid>", "ed25519", "sign", "1y"], check=True, capture_output=True)
    fpr = [line.split(":")[9] for line in subprocess.run(
        ["gpg", "--batch", "--homedir", str(gh), "--with-colons", "--list-secret-keys"],
        capture_output=True, text=True, check=True).stdout.splitlines() if line.startswith("fpr:")][0]
    # update payload signing key (throwaway RSA 2048, a PEM pair like Flatcar's update-payload-key)
    au = fleet.host_root("signer") / "au"
    au.mkdir(mode=0o700, parents=True)
    subprocess.run(["openssl", "genrsa", "-out", str(au / "update-payload-key.key.pem"), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(au / "update-payload-key.key.pem"), "-pubout",
                    "-out", str(au / "update-payload-key.pub.pem")], check=True, capture_output=True)
    vars_all, per_host = make_fleet_vars(fleet, origin, fid)
    # the signer's key variables only on the signer, as a vaulted group_vars/signers file keeps them: the builders'
    # play reads them through the signer's hostvars when it signs there
    per_host["signer"].update({
        "signer_gnupghome": str(gh),
        "signer_key_fingerprint": fpr,
        "kiln_sign_payload_keys": {"private": [str(au / "update-payload-key.key.pem")],
                                   "public": [str(au / "update-payload-key.pub.pem")]},
    })
    (fleet.workdir / "pipeline-vars.json").write_text(json.dumps(vars_all))
    # per-host vars through host_vars next to the inventory
    hv = fleet.workdir / "host_vars"
    hv.mkdir(exist_ok=True)
    for h, v in per_host.items():
        (hv / ("%s.json" % h)).write_text(json.dumps(v))
    return fid


NEBRASKA_PORT = 8123
NEBRASKA_TOKEN = "kiln-test-token"
FLATCAR_APP = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"
MIRROR_HTTP_PORT = 8081


def _ns_popen(ns, argv, log):
    """A long-running process inside a namespace of the fleet (ended by stop_release_services, or with the fleet)."""
    with open(log, "ab") as fh:
        return subprocess.Popen(["ip", "netns", "exec", ns, *map(str, argv)], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def nebraska_spec():
    return Path(vendor_dir()) / "nebraska" / "openapi-spec.yaml"


def start_release_services(fleet, public_url=None, mirror_http=True):
    """The Nebraska stub (spec-checked, tests/integration/nebraska_stub.py) on 127.0.0.1 of the controller's
    namespace, where ansible-playbook and so the registration run, and (mirror_http) the mirror's base over HTTP on
    the mirror's address; their URLs go into pipeline-vars.json (kiln_publish_public_url: public_url, else that HTTP
    server). Returns the processes (for stop_release_services; they also end with the fleet's namespaces)."""
    mirror_base = fleet.host_root("mirror") / "mirror"
    mirror_base.mkdir(parents=True, exist_ok=True)
    procs = [_ns_popen(fleet.ctl_ns, [sys.executable, REPO / "tests" / "integration" / "nebraska_stub.py", "--host", "127.0.0.1",
                                      "--port", NEBRASKA_PORT, "--token", NEBRASKA_TOKEN, "--spec", nebraska_spec()],
                       fleet.workdir / "nebraska.log")]
    if mirror_http:
        procs.append(_ns_popen(fleet.host_ns["mirror"], [sys.executable, "-m", "http.server", "--bind", fleet.ip("mirror"),
                                                         "--directory", mirror_base, MIRROR_HTTP_PORT],
                               fleet.workdir / "mirror-http.log"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if nebraska_packages(fleet) is not None and (not mirror_http or http_get(fleet, "/").returncode == 0):
            break
        time.sleep(0.3)
    else:
        stop_release_services(procs)
        raise RuntimeError("the Nebraska stub or the mirror's HTTP server did not come up: see %s" % fleet.workdir)
    path = fleet.workdir / "pipeline-vars.json"
    pv = json.loads(path.read_text())
    pv.update(kiln_nebraska_url="http://127.0.0.1:%d" % NEBRASKA_PORT, kiln_nebraska_token=NEBRASKA_TOKEN,
              kiln_publish_public_url=public_url or mirror_url(fleet))
    path.write_text(json.dumps(pv))
    return procs


def stop_release_services(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def mirror_url(fleet):
    return "http://%s:%d" % (fleet.ip("mirror"), MIRROR_HTTP_PORT)


def http_get(fleet, path, out=None):
    """GET <mirror base URL><path> from the controller's namespace (what a client of the mirror sees)."""
    argv = ["curl", "-fsS", "--max-time", "20", mirror_url(fleet) + path]
    if out is not None:
        argv += ["-o", str(out)]
    return fleet.run_controller(argv, timeout=60)


def package_identity(packages):
    """What a re-registration would change (the stub makes up flatcar_action.id on every read)."""
    return sorted((p["id"], p["version"], p["arch"], p["size"], p["hash"], p["url"], p["created_ts"],
                   p["flatcar_action"]["sha256"]) for p in packages)


def nebraska_packages(fleet):
    """The packages registered with the stub, through its API from the controller's namespace; None if it does not answer."""
    res = fleet.run_controller(["curl", "-fsS", "--max-time", "10", "-H", "Authorization: Bearer " + NEBRASKA_TOKEN,
                                "http://127.0.0.1:%d/api/apps/%s/packages?page=1&perpage=50" % (NEBRASKA_PORT, FLATCAR_APP)],
                               timeout=30)
    if res.returncode != 0:
        return None
    return json.loads(res.stdout)["packages"]


def finish_fleet(fleet, gen, fid):
    sdk.remove_containers("kiln-%s-" % fid)
    subprocess.run(["gpgconf", "--homedir", str(fleet.host_root("signer") / "gnupg"), "--kill", "all"], capture_output=True, check=False)
    try:
        next(gen)
    except StopIteration:
        pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipefleet")
    fleet, gen, fid = prepare_fleet(work)
    procs = start_release_services(fleet)
    try:
        yield {"fleet": fleet, "fid": fid, "work": work}
    finally:
        stop_release_services(procs)
        finish_fleet(fleet, gen, fid)


def run_pipeline(fleet, *extra, timeout=1500, env=None):
    envv = dict({"ANSIBLE_COLLECTIONS_PATH": ensure_collection_path(), "ANSIBLE_NOCOLOR": "1"}, **(env or {}))
    return fleet.ansible_playbook(str(PIPELINE), "-e", "@%s" % (fleet.workdir / "pipeline-vars.json"), *extra,
                                  env=envv, timeout=timeout)


def summary(fleet):
    return json.loads((fleet.workdir / "summary" / "summary.json").read_text())


def arch_row(s, board):
    return next(r for r in s["architectures"] if r["board"] == board)


def published(fleet, board):
    return (fleet.host_root("mirror") / "mirror" / board / VERSION).is_dir()


def test_dead_builder_other_arch_publishes(env):
    fleet = env["fleet"]
    arm_co = fleet.host_root("b-arm64") / "kiln" / "scripts"
    sdk.set_sleep(arm_co, 25)            # arm64's SDK steps are slow: we kill its sshd meanwhile
    holder = {}
    runs = env["work"] / "kiln-runs-partial"

    def go():
        # through the kiln command when it is installed: its exit code 3 (partial release) on a real fleet
        if KILN is None:
            holder["res"] = run_pipeline(fleet, "-e", "kiln_allow_partial_release=true")
        else:
            holder["res"] = kiln(fleet, "release", "-i", str(fleet.inventory), "--output", "lines", "--runs-dir", str(runs),
                                 "--", "-e", "@%s" % (fleet.workdir / "pipeline-vars.json"), "-e", "kiln_allow_partial_release=true")

    t = threading.Thread(target=go)
    t.start()
    log = arm_co / "__build__" / "images" / "kiln" / "arm64-usr" / VERSION / "logs" / "packages.log"
    deadline = time.monotonic() + 600
    while not log.exists() and time.monotonic() < deadline and t.is_alive():
        time.sleep(1)
    if not log.exists():
        t.join(1500)
        res = holder.get("res")
        pytest.fail("arm64 packages stage never started:\n%s" % (res.stdout[-12000:] + res.stderr[-3000:] if res else ""))
    time.sleep(3)
    fleet.kill_sshd("b-arm64")
    t.join(1500)
    res = holder["res"]
    out = res.stdout
    summary_dir = fleet.workdir / "summary"
    if KILN is not None:
        assert res.returncode == 3, (res.stdout[-4000:], res.stderr[-3000:])
        assert re.search(r"^kiln release: partial release \(exit 3\) in ", res.stdout, re.M), res.stdout[-3000:]
        (run_dir,) = [d for d in runs.iterdir() if d.is_dir()]
        out = "".join(p.read_text() for p in (run_dir / "runner" / "artifacts").glob("*/stdout"))  # Ansible's own output
        summary_dir = run_dir / "summary"
        assert json.loads((run_dir / "run.json").read_text())["exit_code"] == 3
    assert published(fleet, "amd64-usr"), out[-6000:]
    assert not published(fleet, "arm64-usr")
    rows = recap(out)
    assert rows["b-arm64"]["unreachable"] >= 1, out[-3000:]
    s = json.loads((summary_dir / "summary.json").read_text())
    assert arch_row(s, "amd64-usr")["result"] == "published"
    arm = arch_row(s, "arm64-usr")
    assert arm["result"] == "host lost" and arm["lost"], arm
    assert "b-arm64" in out and "lost hosts: b-arm64" in out
    assert (summary_dir / "summary.md").read_text().count("| arm64-usr |") == 1
    # amd64's artifacts are digested in the summary, and the cache got its binary packages
    assert arch_row(s, "amd64-usr")["artifacts"], s
    assert (fleet.host_root("mirror") / "cache" / "boards" / "amd64-usr" / VERSION / "pkgs" / "Packages").exists()
    assert_sent_while_booting(fleet, "b-amd64", "amd64-usr")
    fleet.assert_no_root_ns_leak()


def _epoch(stamp):
    return datetime.datetime.strptime(stamp.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f" if "." in stamp else "%Y-%m-%dT%H:%M:%S") \
        .replace(tzinfo=datetime.timezone.utc).timestamp()


def assert_sent_while_booting(fleet, host, board):
    """The image reached the signer before the boot check ended: the transfer runs while the image boots (the
    signer's copy's ctime is its arrival, rsync's rename; the hosts share one clock). Sent after the check, as before,
    it would arrive after the check's end."""
    rec = record_of(fleet, host, board)
    boots = [st for name, st in rec["stages"].items() if name.startswith("boot_check:")]
    assert boots and all(st["status"] == "passed" for st in boots), rec["stages"].keys()
    image = next(o["path"] for o in rec["stages"]["image"]["outputs"] if o["role"] == "generic_image")
    arrived = os.stat(fleet.host_root("signer") / "builds" / image).st_ctime
    ended = min(_epoch(st["finished"]) for st in boots)
    assert arrived < ended, (image, arrived, ended)


def test_rerun_builds_only_missing_arch(env):
    fleet = env["fleet"]
    fleet.start_sshd("b-arm64")
    sdk.set_sleep(fleet.host_root("b-arm64") / "kiln" / "scripts", None)
    # the lost run's async job went on running on the builder: let it finish (it holds the build record)
    deadline = time.monotonic() + 600
    jobs = fleet.host_root("b-arm64") / ".ansible_async"
    while time.monotonic() < deadline:
        states = []
        for f in jobs.glob("*"):
            try:
                states.append(json.loads(f.read_text()).get("finished", 1))
            except (OSError, ValueError):
                states.append(0)
        if all(states):
            break
        time.sleep(2)
    # Signing runs on the signer for each builder (delegate_to) with the signer's variables; a GnuPG passphrase (the
    # fleet's key has none, so gpg does not need it) goes to the module over SSH and stays in no file on the signer.
    secret = "kiln-S3cret-passphrase-%d" % os.getpid()
    res = run_pipeline(fleet, "-e", json.dumps({"kiln_sign_passphrase": secret}))
    out = res.stdout
    assert res.returncode == 0, out[-8000:]
    rows = recap(out)
    assert rows["b-amd64"]["changed"] == 0, out[-8000:]
    assert rows["b-arm64"]["changed"] > 0
    assert published(fleet, "arm64-usr")
    # (strategy free: the task's header is printed once per host that reaches it)
    sections = [part.split("TASK [", 1)[0] for part in out.split("TASK [Write DIGESTS and signatures on the signer")[1:]]
    assert any("changed: [b-arm64 -> signer" in sec for sec in sections), sections
    for dirpath, _dirs, files in os.walk(fleet.host_root("signer")):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as fh:
                    assert secret.encode() not in fh.read(), path
    s = summary(fleet)
    amd = arch_row(s, "amd64-usr")
    assert amd["stages"]["build"]["ran"] is False
    assert arch_row(s, "arm64-usr")["result"] == "published"


def _b64(digest):
    return base64.b64encode(digest).decode()


def test_release_is_complete(env):
    """What flatcar-update, Nebraska and a user verifying images need, from the runs above (no extra run):
    the signed payload where flatcar-update downloads it (<update base>/<board>/<version>/flatcar_production_update.gz
    and .sha256, flatcar/init bin/flatcar-update), verifying with the public key the mirror serves, the GnuPG key
    the images are signed with, and one Nebraska package per architecture with the payload's size and hashes."""
    fleet, tmp = env["fleet"], env["work"]
    signer = fleet.host_root("signer")
    served_key = tmp / "served-update-payload-key.pub.pem"
    assert http_get(fleet, "/keys/update-payload-key.pub.pem", served_key).returncode == 0
    assert served_key.read_bytes() == (signer / "au" / "update-payload-key.pub.pem").read_bytes()
    gpg_key = tmp / "served-image-signing-key.asc"
    assert http_get(fleet, "/keys/image-signing-key.asc", gpg_key).returncode == 0
    assert gpg_key.read_bytes() == (signer / "gnupg" / "image-signing-key.asc").read_bytes()
    packages = {p["arch"]: p for p in nebraska_packages(fleet)}
    assert sorted(packages) == [1, 2], packages
    s = summary(fleet)
    assert s["run_id"] == "release-" + VERSION
    keys = {k["name"]: k for k in s["keys"]}
    assert keys["update-payload-key.pub.pem"]["sha256"] == hashlib.sha256(served_key.read_bytes()).hexdigest()
    assert keys["update-payload-key.pub.pem"]["url"] == mirror_url(fleet) + "/keys/update-payload-key.pub.pem"
    for board, arch in (("amd64-usr", 1), ("arm64-usr", 2)):
        rel = "/update/%s/%s/" % (board, VERSION)
        on_mirror = fleet.host_root("mirror") / "mirror" / rel.strip("/") / "flatcar_production_update.gz"
        data = on_mirror.read_bytes()
        fetched = tmp / ("payload-%s.gz" % board)
        assert http_get(fleet, rel + "flatcar_production_update.gz", fetched).returncode == 0
        assert fetched.read_bytes() == data
        # flatcar-update compares the .sha256's first field with sha256sum of the payload
        assert http_get(fleet, rel + "flatcar_production_update.gz.sha256").stdout.split()[0] == hashlib.sha256(data).hexdigest()
        info, _run = run_module("kiln.flatcar.payload_info", {"path": str(fetched), "public_keys": [str(served_key)]})
        assert info.get("verified") and not info.get("failed") and info["manifest"]["has_kernel"], info
        pkg = packages[arch]
        assert pkg["version"] == VERSION and pkg["filename"] == "flatcar_production_update.gz", pkg
        assert pkg["url"] == mirror_url(fleet) + rel, pkg
        assert int(pkg["size"]) == len(data) and pkg["hash"] == _b64(hashlib.sha1(data).digest()), pkg
        assert pkg["flatcar_action"]["sha256"] == _b64(hashlib.sha256(data).digest()), pkg
        row = arch_row(s, board)["release"]
        main = next(p for p in row["payloads"] if p["name"] == "flatcar_production_update.gz")
        assert main["sha256"] == hashlib.sha256(data).hexdigest() and main["size"] == len(data)
        assert row["nebraska_package_id"] == pkg["id"] and row["update_url"] == mirror_url(fleet) + rel
    md = (fleet.workdir / "summary" / "summary.md").read_text()
    assert "# kiln pipeline run release-%s" % VERSION in md and "Nebraska package" in md and "update-payload-key.pub.pem" in md


def test_second_full_run_changes_nothing(env):
    fleet = env["fleet"]
    before = nebraska_packages(fleet)
    res = run_pipeline(fleet)
    assert res.returncode == 0, res.stdout[-8000:]
    rows = recap(res.stdout)
    assert set(rows) >= {"b-amd64", "b-arm64", "signer", "mirror", "localhost"}
    for host, row in rows.items():
        assert row["changed"] == 0 and row["failed"] == 0, (host, res.stdout[-8000:])
    # the payloads, keys and Nebraska registration ran again and found everything in place
    assert package_identity(nebraska_packages(fleet)) == package_identity(before)
    s = summary(fleet)
    for board in ("amd64-usr", "arm64-usr"):
        rel = arch_row(s, board)["release"]
        assert rel["payloads"] and rel["nebraska_package_id"] and rel["nebraska_created"] is False, rel
    # check mode writes nothing on the signer or the mirror (payloads, signatures, publish, keys) nor to Nebraska
    roots = [fleet.host_root("signer") / "builds", fleet.host_root("mirror") / "mirror"]
    snap = fs_snapshot(roots)
    res = run_pipeline(fleet, "--check")
    assert res.returncode == 0, res.stdout[-8000:]
    assert fs_changes(snap, fs_snapshot(roots)) == []
    assert package_identity(nebraska_packages(fleet)) == package_identity(before)


KILN = shutil.which("kiln", path=os.path.dirname(sys.executable))


def kiln(fleet, *args, timeout=1500):
    """The kiln command (cli/, over ansible-runner) in the fleet's controller namespace, as an operator runs it."""
    return fleet.run_controller([KILN, *args], env={"ANSIBLE_COLLECTIONS_PATH": ensure_collection_path()}, timeout=timeout)


@pytest.mark.skipif(KILN is None, reason="the kiln command is not installed in the venv: make venv")
def test_kiln_cli_plan_release_status_report(env):
    """Issue 13 item 4 on the fleet: kiln plan (nothing to do) -> kiln release -> kiln status -> kiln report."""
    fleet = env["fleet"]
    runs = str(env["work"] / "kiln-runs")
    inv = str(fleet.inventory)
    pvars = ["--", "-e", "@%s" % (fleet.workdir / "pipeline-vars.json")]
    res = kiln(fleet, "plan", "-i", inv, "--json", "--runs-dir", runs, *pvars)
    assert res.returncode == 0, (res.stdout[-4000:], res.stderr[-4000:])
    events = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    end = events[-1]
    assert end["event"] == "end" and end["exit_code"] == 0, end
    staged = [s for s in end["plan"] if s["stage"]]
    assert {s["board"] for s in staged} >= {"amd64-usr", "arm64-usr"}, end["plan"]
    assert not any(s["changed"] for s in end["plan"]), [s for s in end["plan"] if s["changed"]]
    assert any(e.get("host") == "b-arm64" for e in events[:-1]), events[:5]   # progress records per host

    res = kiln(fleet, "release", "-i", inv, "--output", "lines", "--runs-dir", runs, *pvars)
    assert res.returncode == 0, (res.stdout[-4000:], res.stderr[-4000:])
    assert re.search(r"^kiln release: ok \(exit 0\) in .*; report: kiln report \S+-release$", res.stdout, re.M), res.stdout[-3000:]
    assert re.search(r"^\[ *[0-9ms]+\] b-amd64 ", res.stdout, re.M), res.stdout[:3000]

    res = kiln(fleet, "status", "-i", inv, "--json", *pvars, timeout=300)
    assert res.returncode == 0, (res.stdout[-4000:], res.stderr[-4000:])
    table = json.loads(res.stdout)["stages"]
    for board, host in (("amd64-usr", "b-amd64"), ("arm64-usr", "b-arm64")):
        mine = [r for r in table if r["host"] == host and r["board"] == board and r["version"] == VERSION]
        assert mine and {"packages", "image"} <= {r["stage"] for r in mine}, table
        assert all(r["status"] == "passed" for r in mine if r["stage"] in ("packages", "image")), mine

    res = kiln(fleet, "report", "latest", "--format", "md", "--runs-dir", runs, timeout=120)
    assert res.returncode == 0, (res.stdout[-4000:], res.stderr[-4000:])
    assert "amd64-usr" in res.stdout and "arm64-usr" in res.stdout and VERSION in res.stdout, res.stdout[:3000]


def _images(d):
    return sorted(p for p in d.rglob("flatcar_production_image.bin*")
                  if not re.search(r"\.(sig|asc|DIGESTS)$", p.name) and ".DIGESTS" not in p.name)


def test_corruption_in_transit_is_caught_before_signing(env):
    fleet = env["fleet"]
    signer_arm = fleet.host_root("signer") / "builds" / "images" / "arm64-usr"
    images = _images(signer_arm)
    assert images
    sigs = {p: p.read_bytes() for p in signer_arm.rglob("*.sig")}
    for p in images:                      # the signer lost its copy of the arm64 images: they must travel again
        p.unlink()
    wrapper = fleet.host_root("signer") / "corrupting-rsync"
    wrapper.write_text("#!/bin/sh\n# test hook: the remote rsync flips a byte in every image it received\n"
                       "rsync \"$@\"; rc=$?\n"
                       "find %s -type f -name 'flatcar_production_image.bin*' ! -name '*.sig' ! -name '*.DIGESTS*' "
                       "-exec sh -c 'printf X | dd of=\"$1\" bs=1 seek=4096 conv=notrunc 2>/dev/null' _ {} \\;\n"
                       "exit $rc\n" % signer_arm)
    wrapper.chmod(0o755)
    res = run_pipeline(fleet, "-e", "kiln_transfer_rsync_path=%s" % wrapper)
    out = res.stdout
    assert res.returncode != 0
    assert "corrupted or lost in transit" in out, out[-8000:]
    s = summary(fleet)
    arm = arch_row(s, "arm64-usr")
    assert arm["stages"]["transfer"]["result"] == "failed"
    assert arm["stages"].get("sign", {}).get("result") != "passed"
    # the corrupted copies were removed on the signer and nothing was (re)signed
    assert not _images(signer_arm)
    assert {p: p.read_bytes() for p in signer_arm.rglob("*.sig")} == sigs
    # a clean rerun transfers again; the signatures still match the same bytes, publishing has nothing new
    res = run_pipeline(fleet)
    assert res.returncode == 0, res.stdout[-8000:]
    assert [p.name for p in _images(signer_arm)] == [p.name for p in images]
    assert {p: p.read_bytes() for p in signer_arm.rglob("*.sig")} == sigs


def test_failed_boot_check_signs_nothing_and_gives_the_lock_back(env):
    """A boot check that fails (a BIOS boot with a 1 s timeout, 3 s under TCG, which the firmware alone exceeds;
    arm64 has no BIOS at all): the transfer that ran during the boot is waited for and its job removed, the build
    lock is given back, nothing is signed again, the summary names the test stage. The failed boot_check:bios stage
    stays in the record, and a rerun with the usual firmware transfers (boot_check:* takes only passed stages)."""
    fleet = env["fleet"]
    signer = fleet.host_root("signer") / "builds"
    sigs = {p: p.read_bytes() for p in (signer / "images").rglob("*.sig")}
    signer_sign = record_of(fleet, "signer", "amd64-usr")["stages"]["sign"]["started"]
    res = run_pipeline(fleet, "-e", json.dumps({"kiln_boot_check_firmware": ["bios"], "kiln_boot_timeout": 1}))
    out = res.stdout
    assert res.returncode != 0, out[-8000:]
    s = summary(fleet)
    for board, host in (("amd64-usr", "b-amd64"), ("arm64-usr", "b-arm64")):
        row = arch_row(s, board)
        assert row["stages"]["test"]["result"] == "failed", row
        assert (row["stages"].get("sign") or {}).get("result") != "passed", row
        # the lease is given back, and no transfer job is left behind on the builder
        locks = fleet.host_root(host) / "kiln" / "locks"
        assert not [p for p in locks.rglob("*.lock") if p.name != ".kiln-locks.lock"], list(locks.rglob("*"))
        for job in (fleet.host_root(host) / ".ansible_async").glob("*"):
            assert "dest_record_path" not in job.read_text(errors="replace"), job
    assert record_of(fleet, "b-amd64", "amd64-usr")["stages"]["boot_check:bios"]["status"] == "failed"
    assert {p: p.read_bytes() for p in (signer / "images").rglob("*.sig")} == sigs
    assert record_of(fleet, "signer", "amd64-usr")["stages"]["sign"]["started"] == signer_sign
    assert "boot_check:bios" not in record_of(fleet, "signer", "amd64-usr")["stages"]
    res = run_pipeline(fleet)
    assert res.returncode == 0, res.stdout[-8000:]
    assert arch_row(summary(fleet), "amd64-usr")["result"] == "published"


def record_of(fleet, host, board, version=VERSION):
    """A host's build record: the signer's under its build root, a builder's in its checkout's build root."""
    base = fleet.host_root(host) / ("builds" if host == "signer" else "kiln/scripts/__build__/images")
    return json.loads((base / "kiln" / board / version / "build-record.json").read_text())


def test_unreachable_signer_stops_the_run_before_anything_is_built(env):
    """The cache, the builders and the signer are prepared in one play (strategy free); a signer that cannot be
    reached there stops the run in the next play, with one line naming it, before any build task starts."""
    fleet = env["fleet"]
    fleet.kill_sshd("signer")
    try:
        res = run_pipeline(fleet, timeout=600)
    finally:
        fleet.start_sshd("signer")
    out = res.stdout
    assert res.returncode != 0
    assert "signer could not be prepared" in out, out[-6000:]
    assert "UNREACHABLE" in out and "Check out the scripts repository" not in out, out[-6000:]
