"""kiln.flatcar.gpg_key with real GnuPG through real ansible-playbook runs: import from a no_log option on stdin,
idempotency, public key export, refusals in one line, secrets nowhere in the output, and check mode that touches
nothing (the test snapshots the GnuPG home and the export path and compares)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from kiln_testlib import run_module

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg not installed")

M = "kiln.flatcar.gpg_key"


def gpg(home, *args):
    return subprocess.run(["gpg", "--batch", "--homedir", home] + list(args), capture_output=True, check=True).stdout


def kill_agent(home):
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)


def new_home():
    home = tempfile.mkdtemp(prefix="kgk-")  # short: the agent socket path must fit
    os.chmod(home, 0o700)
    return home


def snapshot(*roots):
    found = {}
    for root in roots:
        if not os.path.exists(root):
            found[root] = None
            continue
        st = os.lstat(root)
        found[root] = (st.st_mode, st.st_mtime_ns)
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                data = open(full, "rb").read() if os.path.isfile(full) else None
                found[full] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    return found


@pytest.fixture(scope="module")
def key():
    home = new_home()
    gpg(home, "--passphrase", "", "--quick-gen-key", "kiln gpg_key test <gk@example.invalid>", "ed25519", "sign", "1y")
    fpr = [l.split(":")[9] for l in gpg(home, "--with-colons", "--list-secret-keys").decode().splitlines() if l.startswith("fpr:")][0]
    secret = gpg(home, "--armor", "--export-secret-keys", fpr).decode()
    public = gpg(home, "--armor", "--export", fpr).decode()
    other = new_home()
    gpg(other, "--passphrase", "", "--quick-gen-key", "other <o@example.invalid>", "ed25519", "sign", "1y")
    other_secret = gpg(other, "--armor", "--export-secret-keys").decode()
    kill_agent(home)
    kill_agent(other)
    yield {"fpr": fpr, "secret": secret, "public": public, "other_secret": other_secret}
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(other, ignore_errors=True)


def test_import_export_idempotent_and_secret(key, tmp_path):
    home = os.path.join(new_home(), "gnupg")  # does not exist yet: created 0700
    pub = tmp_path / "pub" / "signing-key.asc"
    args = {"gnupghome": home, "fingerprint": " ".join(key["fpr"][i:i + 4] for i in range(0, 40, 4)).lower(),
            "private_key": key["secret"], "public_key_path": str(pub)}
    try:
        # check mode on a host that has nothing: says what would happen, writes nothing
        before = snapshot(os.path.dirname(home), str(tmp_path))
        res, run = run_module(M, args, check=True)
        assert not res.get("failed"), res
        assert res["changed"] and res["imported"] and res["public_key_written"] and res["fingerprint"] == key["fpr"]
        assert snapshot(os.path.dirname(home), str(tmp_path)) == before, "check mode wrote something"

        res, run = run_module(M, args)
        assert not res.get("failed"), res
        assert res["changed"] and res["imported"] and res["secret"] and res["fingerprint"] == key["fpr"]
        assert res["uids"] == ["kiln gpg_key test <gk@example.invalid>"]
        assert (os.stat(home).st_mode & 0o777) == 0o700
        assert pub.read_text() == key["public"] and (pub.stat().st_mode & 0o777) == 0o644
        assert key["fpr"] in gpg(home, "--with-colons", "--list-secret-keys").decode()
        # the key material is nowhere in what Ansible reports, and never on a command line in the log
        text = run.stdout + run.stderr + json.dumps(run.events) + open(res["log_path"]).read()
        for line in key["secret"].splitlines()[2:8]:
            assert line not in text
        assert "PRIVATE KEY BLOCK" not in text

        # second run (also with reimport): nothing changes; check mode agrees
        kill_agent(home)
        res, _run = run_module(M, args)
        assert not res["changed"], res
        res, _run = run_module(M, dict(args, reimport=True))
        assert not res["changed"] and not res["imported"], res
        kill_agent(home)
        before = snapshot(home, str(tmp_path))
        res, _run = run_module(M, dict(args, reimport=True, public_key_mode="0640"), check=True)
        assert res["changed"] and res["public_key_written"] and not res["imported"]
        assert snapshot(home, str(tmp_path)) == before, "check mode wrote something"
        # without private_key the present key is enough
        res, _run = run_module(M, {"gnupghome": home, "fingerprint": key["fpr"], "public_key_path": str(pub)})
        assert not res["changed"] and res["secret"]
    finally:
        kill_agent(home)
        shutil.rmtree(os.path.dirname(home), ignore_errors=True)


def test_refusals_are_one_line(key):
    home = new_home()
    try:
        res, _run = run_module(M, {"gnupghome": home, "fingerprint": key["fpr"][-16:]})
        assert res.get("failed") and "is not a full fingerprint" in res["msg"]
        res, _run = run_module(M, {"gnupghome": home, "fingerprint": key["fpr"]})
        assert res.get("failed") and "\n" not in res["msg"]
        assert res["msg"] == "secret key %s is not in %s: give private_key (the armored secret key) or import it by hand" % (key["fpr"], home)
        res, run = run_module(M, {"gnupghome": home, "fingerprint": key["fpr"], "private_key": key["other_secret"]})
        assert res.get("failed") and "\n" not in res["msg"]
        assert res["msg"].startswith("private_key does not hold the secret key %s" % key["fpr"]), res["msg"]
        assert "PRIVATE KEY BLOCK" not in run.stdout + json.dumps(run.events)
        res, _run = run_module(M, {"gnupghome": home, "fingerprint": key["fpr"], "private_key": key["public"]})
        assert res.get("failed") and "not an armored secret key" in res["msg"]
    finally:
        kill_agent(home)
        shutil.rmtree(home, ignore_errors=True)
