"""Integration tests of kiln.flatcar.publish, the mirror role and the update.conf filters.

Real services on loopback, all started and stopped by these tests (by pid):
* nginx through roles/mirror in direct mode (own config, pid, logs) on 127.0.0.1:<free port>;
* sshd on 127.0.0.2:<free port> with a generated key, for rsync over SSH (backend dir);
* moto_server on 127.0.0.1:<free port> for S3 (KILN_TEST_S3_ENDPOINT points the S3 tests at any other
  S3 endpoint; credentials then come from KILN_TEST_S3_ACCESS_KEY / KILN_TEST_S3_SECRET_KEY).
Build trees are small fake ones with a real build record and real GPG signatures (throwaway key).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))

from kiln_testlib import ensure_collection_path, run_module, run_playbook  # noqa: E402

ensure_collection_path()

from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, describe_output, record_path  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)


# -- helpers -----------------------------------------------------------------------------------
def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host, port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("%s:%d did not come up" % (host, port))


def http(url, headers=None):
    """(status, headers, body) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class Gpg:
    """A throwaway signing key (ed25519, no passphrase) in a short private GNUPGHOME."""

    def __init__(self):
        self.home = tempfile.mkdtemp(prefix="kg", dir="/tmp")
        os.chmod(self.home, 0o700)
        batch = "%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\nName-Real: kiln test\n" \
                "Name-Email: test@kiln.invalid\nExpire-Date: 0\n%commit\n"
        self.run(["--generate-key"], input=batch.encode())
        out = self.run(["--list-keys", "--with-colons"]).stdout.decode()
        self.fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
        self.pubkey = os.path.join(self.home, "pub.asc")
        with open(self.pubkey, "wb") as fh:
            fh.write(self.run(["--armor", "--export", self.fpr]).stdout)

    def run(self, args, input=None):
        return subprocess.run(["gpg", "--batch", "--homedir", self.home] + args, input=input, capture_output=True, check=True)

    def sign(self, path):
        self.run(["--local-user", self.fpr, "--output", path + ".sig", "--detach-sign", path])
        return path + ".sig"

    def close(self):
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(self.home, ignore_errors=True)


_RANDOM_CACHE = {}


def image_bytes(version, mib):
    key = (version, mib)
    if key not in _RANDOM_CACHE:
        raw = os.urandom(mib * 1024 * 1024 // 2) + (b"FLATCAR " + version.encode()) * 4096
        _RANDOM_CACHE[key] = (raw, bz2.compress(raw, 1))
    return _RANDOM_CACHE[key]


def make_build(root, version, gpg, board="amd64-usr", image_mib=1, boot=True, sign=True, payload=True, salt=b""):
    """A fake build tree + build record as the build, sign, payload and boot-check stages leave it."""
    build_root = os.path.join(root, "build")
    rel_dir = os.path.join("images", board, "developer-%s-a1" % version)
    d = os.path.join(build_root, rel_dir)
    os.makedirs(d, exist_ok=True)
    raw, comp = image_bytes(version, image_mib)
    files = {
        "flatcar_production_image.bin.bz2": comp + salt,
        "flatcar_production_image.vmlinuz": b"kernel " + version.encode() + salt,
        "version.txt": ("FLATCAR_VERSION=%s\nFLATCAR_VERSION_ID=%s\nFLATCAR_BUILD_ID=\"%s\"\nFLATCAR_SDK_VERSION=4593.0.0\n"
                        % (version, version.split("+")[0], version.split("+")[1] if "+" in version else "")).encode(),
        "flatcar_test_update.gz": gzip.compress(b"dev payload"),
    }
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as fh:
            fh.write(data)
    payload_path = os.path.join(d, "flatcar_production_update.gz")
    with open(payload_path, "wb") as fh:
        fh.write(gzip.compress(b"CrAU payload " + version.encode() + salt))
    vid = version.split("+")[0]
    path = record_path(build_root, board, version)
    with BuildRecord.open(path, board=board, version={"FLATCAR_VERSION": version, "FLATCAR_VERSION_ID": vid,
                                                      "FLATCAR_BUILD_ID": version.split("+")[1] if "+" in version else "",
                                                      "FLATCAR_SDK_VERSION": "4593.0.0"},
                          build_root=build_root) as rec:
        rec.set("build_dir", rel_dir)
        rec.begin("image", {}, "sha256:" + "0" * 64)
        rec.finish("image", [describe_output(build_root, os.path.join(d, n), r) for n, r in (
            ("flatcar_production_image.bin.bz2", "generic_image"), ("flatcar_production_image.vmlinuz", "kernel"),
            ("version.txt", "version"), ("flatcar_test_update.gz", "test_payload"))], {"build_dir": rel_dir})
        if sign:
            outs = []
            for n in ("flatcar_production_image.bin.bz2", "flatcar_production_image.vmlinuz"):
                sig = gpg.sign(os.path.join(d, n))
                outs.append(describe_output(build_root, sig, "signature"))
                digests = os.path.join(d, n + ".DIGESTS")
                with open(digests, "w") as fh:
                    fh.write("# SHA512 HASH\n%s  %s\n" % (hashlib.sha512(open(os.path.join(d, n), "rb").read()).hexdigest(), n))
                outs.append(describe_output(build_root, digests, "signature"))
            rec.begin("sign", {}, "sha256:" + "0" * 64)
            rec.finish("sign", outs, {"fingerprint": gpg.fpr})
        if payload:
            data = open(payload_path, "rb").read()
            import base64
            rec.begin("payload", {}, "sha256:" + "0" * 64)
            rec.finish("payload", [describe_output(build_root, payload_path, "update_payload")], {"payloads": [{
                "name": "flatcar_production_update.gz", "size": len(data),
                "sha1_base64": base64.b64encode(hashlib.sha1(data).digest()).decode(),
                "sha256_base64": base64.b64encode(hashlib.sha256(data).digest()).decode(), "sha256_hex": sha256(data)}]})
        if boot:
            rec.begin("boot_check:bios", {}, "sha256:" + "0" * 64)
            rec.finish("boot_check:bios", [], {"verdict": "passed"})
    return {"build_root": build_root, "record": path, "dir": d, "raw": raw, "board": board, "version": version}


def publish(build, base, backend="local", check=False, env=None, **extra):
    args = dict(backend=backend, record_path=build["record"], base=base, **extra)
    return run_module("kiln.flatcar.publish", args, check=check, env=env)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpg():
    g = Gpg()
    yield g
    g.close()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """The mirror role in direct mode: nginx with its own config and pid on 127.0.0.1:<port>."""
    root = tmp_path_factory.mktemp("mirror")
    www = root / "www"
    prefix = root / "nginx"
    port = free_port()
    pb = root / "mirror.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "roles": [{"role": "kiln.flatcar.mirror"}]}]))
    extra = {"mirror_root": str(www), "mirror_listen": ["127.0.0.1:%d" % port], "mirror_install_packages": False,
             "mirror_nginx_mode": "direct", "mirror_nginx_prefix": str(prefix), "mirror_nginx_user": "root",
             "mirror_retention_script": str(root / "kiln-mirror-retention"), "mirror_retention_keep": 3}
    run = run_playbook(str(pb), extra_vars=extra)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    wait_port("127.0.0.1", port)
    info = {"www": str(www), "url": "http://127.0.0.1:%d" % port, "playbook": str(pb), "extra": extra, "prefix": str(prefix),
            "first_run": run}
    yield info
    pidfile = prefix / "nginx.pid"
    if pidfile.exists():
        os.kill(int(pidfile.read_text().strip()), signal.SIGQUIT)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """sshd on 127.0.0.2:<port> (root netns loopback), key auth with a generated key."""
    d = tmp_path_factory.mktemp("sshd")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = free_port("127.0.0.2")
    (d / "sshd_config").write_text(
        "ListenAddress 127.0.0.2\nPort %d\nHostKey %s\nPidFile %s\nAuthorizedKeysFile %s\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nMaxStartups 50:30:100\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n" % (port, d / "host_key", d / "sshd.pid", d / "authorized_keys"))
    os.makedirs("/run/sshd", exist_ok=True)
    subprocess.run(["/usr/sbin/sshd", "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")], check=True)
    wait_port("127.0.0.2", port)
    yield {"host": "127.0.0.2", "port": port, "key": str(d / "client_key"), "known_hosts": str(d / "known_hosts")}
    pid = int((d / "sshd.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)


def ssh_args(sshd):
    return dict(mirror_host=sshd["host"], mirror_port=sshd["port"], mirror_user="root", ssh_private_key_file=sshd["key"],
                ssh_known_hosts_file=sshd["known_hosts"], ssh_host_key_checking="accept-new")


class FlatcarInstallClient:
    """What `flatcar-install -b <base> -V <version> -k <key>` does (flatcar/init bin/flatcar-install):
    resolve current via current/version.txt, fetch the image and its .sig, gpg --verify with only the given key
    in a temporary GNUPGHOME, decompress."""

    def __init__(self, base_url, key_file):
        self.base = base_url.rstrip("/")
        self.key = key_file

    def install(self, version="current", image="flatcar_production_image.bin.bz2"):
        if version == "current":
            status, _h, body = http(self.base + "/current/version.txt")
            assert status == 200, status
            version = next(line.split("=", 1)[1] for line in body.decode().splitlines() if line.startswith("FLATCAR_VERSION="))
        status, _h, data = http("%s/%s/%s" % (self.base, version, image))
        assert status == 200, (status, version)
        status, _h, sig = http("%s/%s/%s.sig" % (self.base, version, image))
        assert status == 200
        home = tempfile.mkdtemp(prefix="kc", dir="/tmp")
        try:
            os.chmod(home, 0o700)
            subprocess.run(["gpg", "--batch", "--homedir", home, "--import", self.key], check=True, capture_output=True)
            sigf = os.path.join(home, "img.sig")
            with open(sigf, "wb") as fh:
                fh.write(sig)
            v = subprocess.run(["gpg", "--batch", "--homedir", home, "--verify", sigf, "-"], input=data, capture_output=True,
                               check=False)
            subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        if v.returncode != 0:
            raise AssertionError("gpg --verify failed: %s" % v.stderr.decode())
        return version, bz2.decompress(data)


# -- update.conf filters -------------------------------------------------------------------------
def test_update_conf_filters(tmp_path):
    from ansible_collections.kiln.flatcar.plugins.filter.update_conf import update_conf, update_conf_butane, update_conf_ignition
    from urllib.parse import unquote
    text = update_conf("https://nebraska.example/v1/update/", "stable")
    assert text == "SERVER=https://nebraska.example/v1/update/\nGROUP=stable\n"
    ign = update_conf_ignition("https://nebraska.example/v1/update/", group="ab51a000-02dc-4fc7-a6b0-c42881c89856")
    assert ign["ignition"]["version"].startswith("3.")
    f = ign["storage"]["files"][0]
    assert f["path"] == "/etc/flatcar/update.conf" and f["mode"] == 420 and f["overwrite"] is True
    assert unquote(f["contents"]["source"][len("data:,"):]) == \
        "SERVER=https://nebraska.example/v1/update/\nGROUP=ab51a000-02dc-4fc7-a6b0-c42881c89856\n"
    import yaml
    bu = yaml.safe_load(update_conf_butane("https://nebraska.example/v1/update/", "beta"))
    assert bu["variant"] == "flatcar"
    assert bu["storage"]["files"][0]["contents"]["inline"] == "SERVER=https://nebraska.example/v1/update/\nGROUP=beta\n"
    from ansible.errors import AnsibleFilterError
    with pytest.raises(AnsibleFilterError):
        update_conf("ftp://x/", "stable")
    with pytest.raises(AnsibleFilterError):
        update_conf("https://x/v1/update/", "two words")
    # and through Ansible itself
    pb = tmp_path / "f.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "ign", "ansible.builtin.debug": {"msg": "{{ 'https://n.example/v1/update/' | kiln.flatcar.update_conf_ignition(group='stable') }}"}}]}]))
    run = run_playbook(str(pb))
    assert run.rc == 0, run.stdout[-2000:]
    assert run.result("ign")["msg"]["storage"]["files"][0]["path"] == "/etc/flatcar/update.conf"


# -- the mirror role -------------------------------------------------------------------------------
def test_mirror_role_serves_without_listing_or_redirects(mirror):
    www = mirror["www"]
    os.makedirs(os.path.join(www, "stable", "amd64-usr", "1.2.3"), exist_ok=True)
    os.makedirs(os.path.join(www, "stable", "amd64-usr", ".kiln-staging-1.2.4"), exist_ok=True)
    data = os.urandom(4096)
    for name in ("flatcar_production_image.bin.bz2", "x.sig", "x.bin", "x.gz", "version.txt", "x.DIGESTS", "x.sha256"):
        with open(os.path.join(www, "stable", "amd64-usr", "1.2.3", name), "wb") as fh:
            fh.write(data)
    with open(os.path.join(www, "stable", "amd64-usr", ".kiln-staging-1.2.4", "version.txt"), "w") as fh:
        fh.write("x")
    base = mirror["url"] + "/stable/amd64-usr/1.2.3/"
    for name, ctype in (("flatcar_production_image.bin.bz2", "application/octet-stream"), ("x.sig", "application/octet-stream"),
                        ("x.bin", "application/octet-stream"), ("x.gz", "application/octet-stream"),
                        ("version.txt", "text/plain"), ("x.DIGESTS", "text/plain"), ("x.sha256", "text/plain")):
        status, headers, body = http(base + name)
        assert status == 200 and body == data
        assert headers["Content-Type"].split(";")[0] == ctype, (name, headers["Content-Type"])
    status, headers, body = http(base + "flatcar_production_image.bin.bz2", {"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20] and headers["Content-Range"] == "bytes 10-19/4096"
    assert headers.get("Accept-Ranges") == "bytes" or status == 206
    # directories: neither listed nor redirected (with or without trailing slash)
    for path in ("/stable/amd64-usr/1.2.3", "/stable/amd64-usr/1.2.3/", "/stable/", "/"):
        status, headers = http(mirror["url"] + path)[:2]
        assert status == 404, (path, status)
        assert "Location" not in headers
    # staging is never served
    assert http(mirror["url"] + "/stable/amd64-usr/.kiln-staging-1.2.4/version.txt")[0] == 404
    # the role is idempotent and reloads rather than restarts
    run = run_playbook(mirror["playbook"], extra_vars=mirror["extra"])
    assert run.rc == 0 and run.changed_total() == 0, run.stdout[-3000:]
    shutil.rmtree(os.path.join(www, "stable"))


def test_retention_keeps_newest_and_current(tmp_path):
    script = os.path.join(REPO, "roles", "mirror", "files", "kiln-mirror-retention.py")
    root = tmp_path / "m"
    board = root / "stable" / "amd64-usr"
    upd = root / "update" / "amd64-usr"
    versions = ["100.0.0", "101.0.0", "102.0.0", "103.0.0+a", "103.0.0", "99.0.0"]
    for v in versions:
        (board / v).mkdir(parents=True)
        (upd / v).mkdir(parents=True)
    (board / ".kiln-staging-104.0.0").mkdir()
    (board / "current").symlink_to("99.0.0")  # current points at an old version: kept regardless
    out = subprocess.run([sys.executable, script, "--root", str(root), "--keep", "2"], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    left = sorted(p.name for p in board.iterdir())
    assert left == [".kiln-staging-104.0.0", "103.0.0", "103.0.0+a", "99.0.0", "current"], left
    assert sorted(p.name for p in upd.iterdir()) == ["103.0.0", "103.0.0+a", "99.0.0"]
    assert res["changed"] is True
    again = json.loads(subprocess.run([sys.executable, script, "--root", str(root), "--keep", "2"], capture_output=True, text=True,
                                      check=True).stdout)
    assert again["changed"] is False


# -- local backend + nginx + a flatcar-install client ----------------------------------------------
def test_local_publish_flatcar_install_client(tmp_path, gpg, mirror):
    base = os.path.join(mirror["www"], "local")
    b1 = make_build(str(tmp_path / "b1"), "4593.1.0+kiln-1", gpg)
    res, run = publish(b1, base, public_url=mirror["url"] + "/local", signing_key=gpg.pubkey)
    assert run.rc == 0, (res, run.stdout[-3000:])
    assert res["changed"] is True and res["current"]["after"] == "4593.1.0+kiln-1" and res["gate"]["passed"] is True
    assert res["gate"]["signatures"] == 2
    names = sorted((f["area"], f["name"]) for f in res["files"])
    assert ("release", "flatcar_test_update.gz") not in names  # excluded by default
    assert ("update", "flatcar_production_update.gz") in names and ("update", "flatcar_production_update.gz.sha256") in names
    assert res["update_url"] == mirror["url"] + "/local/update/amd64-usr/4593.1.0+kiln-1/"

    client = FlatcarInstallClient(mirror["url"] + "/local/amd64-usr", gpg.pubkey)
    version, image = client.install()
    assert version == "4593.1.0+kiln-1" and image == b1["raw"]
    # flatcar-update's view: payload + sha256 under the update path
    status, _h, payload = http(res["update_url"] + "flatcar_production_update.gz")
    status2, _h, sums = http(res["update_url"] + "flatcar_production_update.gz.sha256")
    assert status == 200 and status2 == 200
    assert sums.decode() == "%s  flatcar_production_update.gz\n" % sha256(payload)
    assert os.readlink(os.path.join(base, "amd64-usr", "current")) == "4593.1.0+kiln-1"

    # rerun: nothing to do
    res2, run2 = publish(b1, base)
    assert run2.rc == 0 and res2["changed"] is False, res2
    assert all(f["status"] == "present" for f in res2["files"])
    # the record has the publish stage
    data = json.load(open(b1["record"]))
    assert data["stages"]["publish:mirror"]["status"] == "passed"

    # a newer build moves current forward; an older one publishes but never moves it back
    b2 = make_build(str(tmp_path / "b2"), "4593.2.0+kiln-1", gpg)
    res3, run3 = publish(b2, base)
    assert run3.rc == 0 and res3["current"]["changed"] and res3["current"]["before"] == "4593.1.0+kiln-1"
    b0 = make_build(str(tmp_path / "b0"), "4593.0.5+kiln-1", gpg)
    res4, run4 = publish(b0, base)
    assert run4.rc == 0 and res4["changed"] is True and res4["current"]["changed"] is False, res4
    assert "older than current" in res4["current"]["reason"]
    assert client.install()[0] == "4593.2.0+kiln-1"
    assert client.install("4593.0.5+kiln-1")[1] == b0["raw"]
    res5, run5 = publish(b0, base, allow_downgrade=True)
    assert run5.rc == 0 and res5["current"]["after"] == "4593.0.5+kiln-1"

    # check mode changes nothing
    b3 = make_build(str(tmp_path / "b3"), "4593.3.0+kiln-1", gpg)
    res6, run6 = publish(b3, base, check=True)
    assert run6.rc == 0 and res6["changed"] is True
    assert not os.path.exists(os.path.join(base, "amd64-usr", "4593.3.0+kiln-1"))
    assert not os.path.exists(os.path.join(base, "amd64-usr", ".kiln-staging-4593.3.0+kiln-1"))


def test_version_uniqueness_and_tamper_detection(tmp_path, gpg, mirror):
    base = os.path.join(mirror["www"], "tamper")
    b1 = make_build(str(tmp_path / "b1"), "4600.0.0+t-1", gpg)
    res, run = publish(b1, base)
    assert run.rc == 0, res
    # a different build under the same version is refused, never overwritten
    other = make_build(str(tmp_path / "other"), "4600.0.0+t-1", gpg, salt=b"different")
    res2, run2 = publish(other, base)
    assert run2.rc != 0 and "version uniqueness" in res2["msg"], res2
    # tamper with a published file: post-publish verify (mode=verify) detects it, a rerun refuses
    target = os.path.join(base, "amd64-usr", "4600.0.0+t-1", "flatcar_production_image.vmlinuz")
    with open(target, "r+b") as fh:
        fh.write(b"X")
    res3, run3 = publish(b1, base, mode="verify")
    assert run3.rc != 0 and "post-publish verify" in res3["msg"] and "flatcar_production_image.vmlinuz" in res3["msg"], res3
    res4, run4 = publish(b1, base)
    assert run4.rc != 0 and "version uniqueness" in res4["msg"]
    assert "\n" not in res4["msg"]


def test_gate_refuses_and_override_is_recorded(tmp_path, gpg, mirror):
    base = os.path.join(mirror["www"], "gate")
    nob = make_build(str(tmp_path / "nob"), "4601.0.0", gpg, boot=False)
    res, run = publish(nob, base)
    assert run.rc != 0 and "publish gate refused" in res["msg"] and "boot check" in res["msg"]
    assert not os.path.exists(os.path.join(base, "amd64-usr"))
    uns = make_build(str(tmp_path / "uns"), "4601.0.1", gpg, sign=False)
    res, run = publish(uns, base)
    assert run.rc != 0 and "no signature" in res["msg"]
    # a signature by another key fails cryptographic verification
    other = Gpg()
    try:
        res, run = publish(make_build(str(tmp_path / "ok"), "4601.0.2", gpg), base, signing_key=other.pubkey)
    finally:
        other.close()
    assert run.rc != 0 and "does not verify with signing_key" in res["msg"], res
    res, run = publish(nob, base, gate_override=True)
    assert run.rc != 0 and "gate_override_reason" in res["msg"]
    res, run = publish(nob, base, gate_override=True, gate_override_reason="emergency fix, boot checked by hand")
    assert run.rc == 0 and res["gate"]["overridden"] is True, res
    assert any("gate overridden" in w for w in res.get("warnings", []))
    stage = json.load(open(nob["record"]))["stages"]["publish:mirror"]
    assert stage["details"]["gate"]["overridden"] is True
    assert stage["details"]["gate"]["reason"] == "emergency fix, boot checked by hand"


# -- dir backend: rsync over ssh, interrupted transfer -----------------------------------------------
SLOW_RSYNC = """#!/bin/sh
# rsync that is killed halfway: starts the real rsync throttled, kills it after a moment
/usr/bin/rsync --bwlimit=300 "$@" &
pid=$!
sleep 1.5
kill -9 $pid
wait $pid
exit 137
"""


def test_dir_backend_over_ssh_interrupted_and_resumed(tmp_path, gpg, mirror, sshd):
    base = os.path.join(mirror["www"], "remote")
    url = mirror["url"] + "/remote/amd64-usr"
    b1 = make_build(str(tmp_path / "b1"), "4610.0.0+r-1", gpg)
    res, run = publish(b1, base, backend="dir", **ssh_args(sshd))
    assert run.rc == 0, (res, run.stdout[-3000:])
    assert res["current"]["after"] == "4610.0.0+r-1"
    client = FlatcarInstallClient(url, gpg.pubkey)
    assert client.install() == ("4610.0.0+r-1", b1["raw"])

    b2 = make_build(str(tmp_path / "b2"), "4610.1.0+r-1", gpg, image_mib=3)
    wrapper = tmp_path / "slowbin"
    wrapper.mkdir()
    (wrapper / "rsync").write_text(SLOW_RSYNC)
    os.chmod(wrapper / "rsync", 0o755)
    t0 = time.time()
    res, run = publish(b2, base, backend="dir", rsync_executable=str(wrapper / "rsync"), **ssh_args(sshd))
    assert run.rc != 0 and "rsync" in res["msg"] and "nothing was made visible" in res["msg"], res
    assert res["log_tail"], res
    # the previous current is intact and the new version is invisible (neither path nor staging served)
    assert client.install()[0] == "4610.0.0+r-1"
    for path in ("/4610.1.0+r-1/version.txt", "/4610.1.0+r-1/flatcar_production_image.bin.bz2",
                 "/.kiln-staging-4610.1.0+r-1/version.txt"):
        assert http(url + path)[0] == 404, path
    staging = os.path.join(base, "amd64-usr", ".kiln-staging-4610.1.0+r-1")
    update_staging = os.path.join(base, "update", "amd64-usr", ".kiln-staging-4610.1.0+r-1")
    # what was sent is kept for the resume (hidden); a staging directory that got nothing is not left behind (issue 11)
    for d in (staging, update_staging):
        assert not os.path.isdir(d) or os.listdir(d), d
    stage = json.load(open(b2["record"]))["stages"]["publish:mirror"]
    assert stage["status"] == "failed"
    # rerun with the real rsync completes it
    res, run = publish(b2, base, backend="dir", **ssh_args(sshd))
    assert run.rc == 0, res
    assert res["current"]["before"] == "4610.0.0+r-1" and res["current"]["after"] == "4610.1.0+r-1"
    assert client.install() == ("4610.1.0+r-1", b2["raw"])
    assert not os.path.exists(staging)
    res, run = publish(b2, base, backend="dir", **ssh_args(sshd))
    assert run.rc == 0 and res["changed"] is False
    # tamper on the remote mirror: detected over ssh
    with open(os.path.join(base, "amd64-usr", "4610.1.0+r-1", "version.txt"), "a") as fh:
        fh.write("# edited\n")
    res, run = publish(b2, base, backend="dir", mode="verify", **ssh_args(sshd))
    assert run.rc != 0 and "version.txt" in res["msg"]
    print("interrupted publish failed after %.1fs" % (time.time() - t0))


# -- playbook -------------------------------------------------------------------------------------
def test_publish_playbook_all_boards_and_gate(tmp_path, gpg, mirror):
    root = str(tmp_path / "tree")
    v = "4620.0.0+pb-1"
    amd = make_build(root, v, gpg, board="amd64-usr")
    arm = make_build(root, v, gpg, board="arm64-usr")
    base = os.path.join(mirror["www"], "pb")
    extra = {"kiln_flatcar_version": v, "kiln_build_root": amd["build_root"], "kiln_publish_backend": "local",
             "kiln_publish_base": base, "kiln_publish_public_url": mirror["url"] + "/pb",
             "kiln_publish_signing_key": gpg.pubkey}
    run = run_playbook(os.path.join(REPO, "playbooks", "publish.yml"), extra_vars=extra)
    assert run.rc == 0, run.stdout[-4000:]
    for board, build in (("amd64-usr", amd), ("arm64-usr", arm)):
        client = FlatcarInstallClient(mirror["url"] + "/pb/" + board, gpg.pubkey)
        assert client.install() == (v, build["raw"])
    # gate: a board without a boot check stops the play; the override is explicit and logged
    v2 = "4620.1.0+pb-1"
    make_build(root, v2, gpg, board="amd64-usr", boot=False)
    run = run_playbook(os.path.join(REPO, "playbooks", "publish.yml"), extra_vars=dict(extra, kiln_flatcar_version=v2))
    assert run.rc != 0 and "publish gate refused" in run.stdout, run.stdout[-3000:]
    run = run_playbook(os.path.join(REPO, "playbooks", "publish.yml"), extra_vars=dict(
        extra, kiln_flatcar_version=v2, kiln_publish_gate_override=True, kiln_publish_gate_override_reason="test override"))
    assert run.rc == 0, run.stdout[-3000:]
    assert "GATE OVERRIDE" in run.stdout


# -- S3 -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    endpoint = os.environ.get("KILN_TEST_S3_ENDPOINT")
    proc = None
    # moto accepts any credentials: a distinctive secret lets the tests prove it never leaks
    creds = {"access_key": os.environ.get("KILN_TEST_S3_ACCESS_KEY", "kilntestaccess"),
             "secret_key": os.environ.get("KILN_TEST_S3_SECRET_KEY", "kiln-secret-%s" % uuid.uuid4().hex)}
    if not endpoint:
        exe = os.path.join(VENV_BIN, "moto_server")
        if not os.path.exists(exe):
            exe = shutil.which("moto_server")
        if not exe:
            pytest.skip("moto_server not installed and KILN_TEST_S3_ENDPOINT not set")
        port = free_port()
        log = open(str(tmp_path_factory.mktemp("moto") / "moto.log"), "w")
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", port)
        endpoint = "http://127.0.0.1:%d" % port
    import boto3
    client = boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("KILN_TEST_S3_REGION", "us-east-1"),
                          aws_access_key_id=creds["access_key"], aws_secret_access_key=creds["secret_key"],
                          config=__import__("botocore.config").config.Config(s3={"addressing_style": "path"}))
    bucket = "kiln-test-%s" % uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=bucket)
    yield {"endpoint": endpoint, "bucket": bucket, "client": client, "creds": creds}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def s3_args(s3):
    return dict(bucket=s3["bucket"], endpoint_url=s3["endpoint"], access_key=s3["creds"]["access_key"],
                secret_key=s3["creds"]["secret_key"], region=os.environ.get("KILN_TEST_S3_REGION", "us-east-1"))


def test_s3_publish_current_and_tamper(tmp_path, gpg, s3):
    c, bucket = s3["client"], s3["bucket"]
    b1 = make_build(str(tmp_path / "b1"), "4630.0.0+s3-1", gpg)
    res, run = publish(b1, "stable", backend="s3", **s3_args(s3))
    assert run.rc == 0, (res, run.stdout[-3000:])
    secret = s3["creds"]["secret_key"]
    assert secret not in json.dumps(res) and secret not in run.stdout and secret not in json.dumps(run.events)
    keys = set(o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="stable/")["Contents"])
    v = "4630.0.0+s3-1"
    assert "stable/amd64-usr/%s/flatcar_production_image.bin.bz2" % v in keys
    assert "stable/amd64-usr/%s/flatcar_production_image.bin.bz2.sig" % v in keys
    assert "stable/update/amd64-usr/%s/flatcar_production_update.gz.sha256" % v in keys
    assert not any(".kiln-staging" in k for k in keys), keys
    assert c.get_object(Bucket=bucket, Key="stable/amd64-usr/current")["Body"].read().decode().strip() == v
    vt = c.get_object(Bucket=bucket, Key="stable/amd64-usr/current/version.txt")["Body"].read().decode()
    assert "FLATCAR_VERSION=%s" % v in vt
    img = c.get_object(Bucket=bucket, Key="stable/amd64-usr/%s/flatcar_production_image.bin.bz2" % v)
    assert img["ContentType"] == "application/octet-stream"
    assert bz2.decompress(img["Body"].read()) == b1["raw"]
    # rerun skips
    res, run = publish(b1, "stable", backend="s3", **s3_args(s3))
    assert run.rc == 0 and res["changed"] is False, res
    # newer moves current; older does not
    b2 = make_build(str(tmp_path / "b2"), "4630.1.0+s3-1", gpg)
    res, run = publish(b2, "stable", backend="s3", **s3_args(s3))
    assert run.rc == 0 and res["current"]["after"] == "4630.1.0+s3-1"
    res, run = publish(b1, "stable", backend="s3", **s3_args(s3))
    assert run.rc == 0 and res["current"]["changed"] is False
    assert c.get_object(Bucket=bucket, Key="stable/amd64-usr/current")["Body"].read().decode().strip() == "4630.1.0+s3-1"
    # uniqueness and tampering
    other = make_build(str(tmp_path / "o"), "4630.1.0+s3-1", gpg, salt=b"other")
    res, run = publish(other, "stable", backend="s3", **s3_args(s3))
    assert run.rc != 0 and "version uniqueness" in res["msg"]
    key = "stable/amd64-usr/4630.1.0+s3-1/flatcar_production_image.vmlinuz"
    meta = c.head_object(Bucket=bucket, Key=key)["Metadata"]
    good = c.get_object(Bucket=bucket, Key=key)["Body"].read()
    c.put_object(Bucket=bucket, Key=key, Body=b"Y" * len(good), Metadata=meta)  # same size and metadata, other bytes
    res, run = publish(b2, "stable", backend="s3", mode="verify", **s3_args(s3))
    assert run.rc != 0 and "flatcar_production_image.vmlinuz" in res["msg"], res


def test_s3_interrupted_upload_leaves_nothing_visible(tmp_path, gpg, s3):
    c, bucket = s3["client"], s3["bucket"]
    b1 = make_build(str(tmp_path / "b1"), "4640.0.0+s3-1", gpg)
    # the transfer dies halfway: one recorded source vanishes after others went to staging
    victim = os.path.join(b1["dir"], "flatcar_production_image.vmlinuz")
    os.rename(victim, victim + ".away")
    res, run = publish(b1, "intr", backend="s3", verify_source=False, **s3_args(s3))
    os.rename(victim + ".away", victim)
    assert run.rc != 0 and "nothing was made visible" in res["msg"], res
    listed = c.list_objects_v2(Bucket=bucket, Prefix="intr/").get("Contents", [])
    assert any(".kiln-staging" in o["Key"] for o in listed)  # some files made it to staging
    assert not any("/4640.0.0+s3-1/" in o["Key"] and ".kiln-staging" not in o["Key"] for o in listed)
    assert not any(o["Key"].endswith("/current") for o in listed)
    res, run = publish(b1, "intr", backend="s3", **s3_args(s3))
    assert run.rc == 0 and res["current"]["after"] == "4640.0.0+s3-1", res
    listed = c.list_objects_v2(Bucket=bucket, Prefix="intr/").get("Contents", [])
    assert not any(".kiln-staging" in o["Key"] for o in listed)


# -- check mode, diff mode ---------------------------------------------------------------------------
def snapshot(*roots):
    """Every path under ``roots`` with its type, size, mode, mtime and link target: any write shows up."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [""] + dirnames + filenames:
                path = os.path.join(dirpath, name) if name else dirpath
                st = os.lstat(path)
                out[path] = (st.st_mode, st.st_size, st.st_mtime_ns, os.readlink(path) if os.path.islink(path) else None)
    return out


@pytest.mark.parametrize("backend", ["local", "dir"])
def test_check_mode_writes_nothing(tmp_path, gpg, sshd, backend):
    base = str(tmp_path / "mirror")
    os.makedirs(base)
    b1 = make_build(str(tmp_path / "b1"), "4650.0.0+chk-1", gpg)
    extra = ssh_args(sshd) if backend == "dir" else {}
    res, run = publish(b1, base, backend=backend, signing_key=gpg.pubkey, **extra)
    assert run.rc == 0, res
    b2 = make_build(str(tmp_path / "b2"), "4650.1.0+chk-1", gpg)
    # leftovers a real run would sweep or write next to: check mode must leave them alone
    stale = os.path.join(base, "amd64-usr", ".kiln-staging-4649.0.0")
    os.makedirs(stale)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    roots = (base, os.path.dirname(b2["record"]))
    before = snapshot(*roots)
    res, run = publish(b2, base, backend=backend, check=True, signing_key=gpg.pubkey, **extra)
    assert run.rc == 0 and res["changed"] is True, res
    assert res["current"] == {"before": "4650.0.0+chk-1", "after": "4650.1.0+chk-1", "changed": True,
                              "reason": "forward from 4650.0.0+chk-1"}
    assert all(f["status"] == "pending" for f in res["files"]) and res["uploaded"] == []
    after = snapshot(*roots)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
    assert not os.path.exists(os.path.join(roots[1], "logs"))
    # and a check-mode run of an already published version reports nothing to do, also without writes
    before = snapshot(base, os.path.dirname(b1["record"]))
    res, run = publish(b1, base, backend=backend, check=True, **extra)
    assert run.rc == 0 and res["changed"] is False, res
    assert snapshot(base, os.path.dirname(b1["record"])) == before


def run_with_diff(args, check=False):
    with tempfile.TemporaryDirectory(prefix="kiln-pb-") as tmp:
        pb = os.path.join(tmp, "pb.yml")
        with open(pb, "w", encoding="utf-8") as fh:
            json.dump([{"hosts": "localhost", "gather_facts": False,
                        "tasks": [{"name": "kiln under test", "kiln.flatcar.publish": args, "diff": True}]}], fh)
        run = run_playbook(pb, check=check)
    return run.result("kiln under test"), run


def test_diff_mode_shows_current(tmp_path, gpg):
    base = str(tmp_path / "mirror")
    b1 = make_build(str(tmp_path / "b1"), "4651.0.0+diff-1", gpg)
    args = dict(backend="local", record_path=b1["record"], base=base)
    res, run = run_with_diff(args, check=True)
    assert run.rc == 0, res
    assert res["diff"]["before"]["current"] is None and res["diff"]["after"]["current"] == "4651.0.0+diff-1", res["diff"]
    assert res["diff"]["before"]["files"] == [] and "release/flatcar_production_image.bin.bz2" in res["diff"]["after"]["files"]
    assert res["diff"]["before_header"] == os.path.join(base, "amd64-usr", "current")
    res, run = run_with_diff(args)
    assert run.rc == 0 and res["changed"] is True, res
    assert res["diff"]["after"]["current"] == "4651.0.0+diff-1"
    b2 = make_build(str(tmp_path / "b2"), "4651.1.0+diff-1", gpg)
    res, run = run_with_diff(dict(args, record_path=b2["record"]))
    assert run.rc == 0, res
    assert (res["diff"]["before"]["current"], res["diff"]["after"]["current"]) == ("4651.0.0+diff-1", "4651.1.0+diff-1")
    res, run = run_with_diff(dict(args, record_path=b2["record"]))
    assert run.rc == 0 and res["changed"] is False and res["diff"]["before"] == res["diff"]["after"], res


# -- untrusted build-record values ---------------------------------------------------------------------
def _edit_record(build, edit):
    with open(build["record"]) as fh:
        data = json.load(fh)
    edit(data, build)
    with open(build["record"], "w") as fh:
        json.dump(data, fh)


def _add_output(data, path, content_file):
    blob = open(content_file, "rb").read()
    data["stages"]["image"]["outputs"].append({"path": path, "role": "readme", "size": len(blob), "sha256": sha256(blob)})


def _outside(build):
    path = os.path.join(os.path.dirname(build["build_root"]), "outside.txt")
    with open(path, "w") as fh:
        fh.write("not part of the build\n")
    return path


def _symlink_out(data, build):
    link = os.path.join(build["dir"], "innocent.txt")
    os.symlink(_outside(build), link)
    _add_output(data, os.path.relpath(link, build["build_root"]), link)


RECORD_CASES = {
    "board": (lambda d, b: d.__setitem__("board", "../../escape"), "names board"),
    "version": (lambda d, b: d["version"].__setitem__("FLATCAR_VERSION", "4652.0.0+x/../../../escape"), "FLATCAR_VERSION"),
    "version_prefix": (lambda d, b: d["version"].__setitem__("FLATCAR_VERSION", "stable-4652.0.0"), "canonical"),
    "dotdot": (lambda d, b: _add_output(d, "../outside.txt", _outside(b)), "contains '..'"),
    "absolute": (lambda d, b: _add_output(d, "/etc/hostname", "/etc/hostname"), "is absolute"),
    "symlink": (_symlink_out, "outside"),
    "no_size": (lambda d, b: d["stages"]["image"]["outputs"][0].pop("size"), "has no size"),
    "bad_sha": (lambda d, b: d["stages"]["image"]["outputs"][0].__setitem__("sha256", "../x"), "invalid sha256"),
    "stages_null": (lambda d, b: d.__setitem__("stages", None), "has stages null instead of an object"),
    "output_not_dict": (lambda d, b: d["stages"]["image"]["outputs"].append(None), "not an object"),
}


@pytest.mark.parametrize("case", sorted(RECORD_CASES))
def test_untrusted_record_values_fail_in_one_line(tmp_path, gpg, case):
    edit, expect = RECORD_CASES[case]
    base = str(tmp_path / "m" / "mirror")
    build = make_build(str(tmp_path / "b"), "4652.0.0+rec-1", gpg)
    _edit_record(build, edit)
    res, run = publish(build, base, require_signatures=False)
    assert run.rc != 0, res
    assert "MODULE FAILURE" not in res["msg"] and "Traceback" not in str(res.get("exception")) + str(res.get("module_stderr")), res
    # refused by publish itself, or first by the record schema when the record is loaded (_record.load_data)
    assert "\n" not in res["msg"] and (expect in res["msg"] or "is invalid at $." in res["msg"]), res["msg"]
    # nothing anywhere: neither under base nor next to it
    assert sorted(os.listdir(str(tmp_path / "m"))) == [] if os.path.isdir(str(tmp_path / "m")) else True
    assert not os.path.exists(str(tmp_path / "escape"))


# -- empty staging leftovers ----------------------------------------------------------------------------
def stagings(base):
    found = []
    for dirpath, dirnames, _files in os.walk(base):
        found += [os.path.relpath(os.path.join(dirpath, d), base) for d in dirnames if d.startswith(".kiln-staging-")]
    return sorted(found)


def test_empty_staging_leftovers_are_removed(tmp_path, gpg):
    base = str(tmp_path / "mirror")
    b1 = make_build(str(tmp_path / "b1"), "4653.0.0+stg-1", gpg)
    # a transfer that fails before anything arrived: the staging directories it prepared go again
    victim = os.path.join(b1["dir"], "flatcar_production_image.bin.bz2")
    os.rename(victim, victim + ".away")
    res, run = publish(b1, base, verify_source=False, require_signatures=False)
    os.rename(victim + ".away", victim)
    assert run.rc != 0 and "nothing was made visible" in res["msg"], res
    assert stagings(base) == [], stagings(base)
    res, run = publish(b1, base)
    assert run.rc == 0, res
    # a refused publish (version uniqueness) leaves no staging either
    other = make_build(str(tmp_path / "o"), "4653.0.0+stg-1", gpg, salt=b"other")
    res, run = publish(other, base)
    assert run.rc != 0 and "version uniqueness" in res["msg"], res
    assert stagings(base) == [], stagings(base)
    # stale empty leftovers of other versions go with the next publish; fresh or non-empty ones stay
    board = os.path.join(base, "amd64-usr")
    old_empty = os.path.join(board, ".kiln-staging-4600.0.0")
    fresh_empty = os.path.join(board, ".kiln-staging-4601.0.0")
    old_full = os.path.join(board, ".kiln-staging-4602.0.0")
    old_update = os.path.join(base, "update", "amd64-usr", ".kiln-staging-4603.0.0")
    for d in (old_empty, fresh_empty, old_full, old_update):
        os.makedirs(d)
    with open(os.path.join(old_full, "part"), "w") as fh:
        fh.write("partial")
    for d in (old_empty, old_full, old_update):
        os.utime(d, (time.time() - 7200, time.time() - 7200))
    b2 = make_build(str(tmp_path / "b2"), "4653.1.0+stg-1", gpg)
    res, run = publish(b2, base)
    assert run.rc == 0, res
    assert stagings(base) == ["amd64-usr/.kiln-staging-4601.0.0", "amd64-usr/.kiln-staging-4602.0.0"], stagings(base)


# -- ssh_private_key never on disk, also not after SIGTERM ------------------------------------------------
KEY_RSYNC = """#!/bin/sh
echo "$$ $PPID" > %(marker)s
sleep 60
exec /usr/bin/rsync "$@"
"""


def _files_containing(root, needle):
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as fh:
                    if needle in fh.read():
                        hits.append(path)
            except OSError:
                pass
    return hits


def _processes_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as fh:
                if text.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_ssh_private_key_never_on_disk_even_on_sigterm(tmp_path, gpg, mirror, sshd):
    base = os.path.join(mirror["www"], "keytext")
    key_text = open(sshd["key"]).read()
    needle = key_text.strip().splitlines()[1].encode()  # a line of the key body
    tmpdir = tempfile.mkdtemp(prefix="kt", dir="/tmp")
    try:
        args = dict(ssh_args(sshd), backend="dir", record_path=None, base=base, ssh_private_key=key_text)
        del args["ssh_private_key_file"]
        b1 = make_build(str(tmp_path / "b1"), "4654.0.0+key-1", gpg)
        pb = str(tmp_path / "pb.yml")

        def start(build, **extra):
            with open(pb, "w") as fh:
                json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": [{
                    "name": "kiln under test", "kiln.flatcar.publish": dict(args, record_path=build["record"], **extra),
                    "environment": {"TMPDIR": tmpdir}}]}], fh)
            from kiln_testlib import ansible_env
            cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
                   "ansible_python_interpreter=" + sys.executable, pb]
            return subprocess.Popen(cmd, env=ansible_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        # a normal run: the key goes to a private ssh-agent, never into a file; the agent is gone afterwards
        proc = start(b1)
        seen = []
        while proc.poll() is None:
            seen += _files_containing(tmpdir, needle)
            time.sleep(0.05)
        out = proc.stdout.read().decode()
        assert proc.returncode == 0, out[-3000:]
        assert seen == [] and _files_containing(tmpdir, needle) == [], seen
        assert _processes_mentioning(tmpdir) == []
        assert os.listdir(tmpdir) == []
        assert key_text.strip().splitlines()[1] not in out

        # SIGTERM while rsync runs: the handler removes everything and the process still dies of SIGTERM
        marker = tmp_path / "rsync.pids"
        wrapper = tmp_path / "rsync-wrapper"
        wrapper.write_text(KEY_RSYNC % {"marker": marker})
        os.chmod(wrapper, 0o755)
        b2 = make_build(str(tmp_path / "b2"), "4654.1.0+key-1", gpg)
        proc = start(b2, rsync_executable=str(wrapper))
        end = time.time() + 120
        while not marker.exists() and time.time() < end and proc.poll() is None:
            seen += _files_containing(tmpdir, needle)
            time.sleep(0.05)
        assert marker.exists(), proc.stdout.read().decode()[-3000:]
        time.sleep(0.2)
        wrapper_pid, module_pid = (int(x) for x in marker.read_text().split())
        try:
            assert _processes_mentioning(tmpdir), "the agent should be running now"
            os.kill(module_pid, signal.SIGTERM)
            proc.wait(60)
        finally:
            os.kill(wrapper_pid, signal.SIGKILL)
        out = proc.stdout.read().decode()
        assert proc.returncode != 0, out[-3000:]
        assert seen == [] and _files_containing(tmpdir, needle) == [], seen
        # SIGKILL is delivered asynchronously: give the killed wrapper (whose argv names the agent socket) a moment to go
        end = time.time() + 10
        left = _processes_mentioning(tmpdir)
        while left and time.time() < end:
            time.sleep(0.1)
            left = _processes_mentioning(tmpdir)
        assert left == [], ("ssh-agent left running", [open("/proc/%d/cmdline" % pid).read() for pid in left], out[-2500:])
        # (AnsiballZ's own payload directory stays after a signal death: Ansible's, holding no secret)
        assert [n for n in os.listdir(tmpdir) if n.startswith("kiln-")] == [], os.listdir(tmpdir)
    finally:
        for pid in _processes_mentioning(tmpdir):  # only the agent this test made the module start
            os.kill(pid, signal.SIGTERM)
        shutil.rmtree(tmpdir, ignore_errors=True)
