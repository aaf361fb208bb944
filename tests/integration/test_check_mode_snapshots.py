"""Issue 10: the modules outside the stage engine write nothing in check mode either (real ansible-playbook --check
runs). Each run is given arguments that change things in normal mode; the test directory (build root, state dir,
destination, output, cache) and the module's TMPDIR are snapshotted (listing, type, size, mtime) around it.

Covered here: kola, binpkg_cache (pull and push), build_lock, payload_info, gpg_key. The stage modules are in
test_stage_check_mode.py and test_sdk_check_mode.py, host_preflight in test_host_preflight.py, publish in
test_publish.py::test_check_mode_writes_nothing."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from kiln_testlib import fs_changes, fs_snapshot, run_module  # noqa: E402
from test_kola import ENV as KOLA_ENV, KOLA  # noqa: E402
# the sshd fixture (127.0.0.2, key auth) of the publish tests, and the stand-in docker of the option-safety tests
from test_option_safety import container, push_args, ssh_config  # noqa: E402,F401 pylint: disable=unused-import
from tests.integration.test_publish import sshd  # noqa: E402,F401 pylint: disable=unused-import

BOARD = "amd64-usr"


@pytest.fixture()
def tmpdir_short():
    """TMPDIR for the module: short, so gpg-agent's and ssh-agent's socket paths under it fit."""
    path = tempfile.mkdtemp(prefix="kc-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unchanged_by_check_mode(roots, tmpdir, module, args, env=None, task_env=None):
    """Run ``module`` with ``args`` in check mode; assert nothing under ``roots`` or ``tmpdir`` changed. TMPDIR's own
    mtime is left out (a private scratch directory may be made and removed there); what is in it must be unchanged."""
    roots = [str(r) for r in roots] + [tmpdir]
    before = fs_snapshot(roots, volatile_roots=(tmpdir,))
    res, _run = run_module(module, args, check=True, env=env, task_env=dict(task_env or {}, TMPDIR=tmpdir))
    changes = fs_changes(before, fs_snapshot(roots, volatile_roots=(tmpdir,)))
    assert not changes, "%s wrote in check mode: %s" % (module, changes)
    return res


# -- kola -------------------------------------------------------------------------------------------------
def test_kola_writes_nothing_in_check_mode(tmp_path, tmpdir_short):
    image = tmp_path / "flatcar_production_image.bin"
    image.write_bytes(b"\0" * 1024)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"log": str(tmp_path / "invocations.jsonl")}))
    out = tmp_path / "out"
    args = {"kola": KOLA, "board": BOARD, "image": str(image), "output_dir": str(out), "tests": ["cl.basic"],
            "tapfile": str(tmp_path / "merged.tap"), "junit": str(tmp_path / "junit.xml"),
            "environment": {"KOLA_STANDIN_PLAN": str(plan)}}
    res = unchanged_by_check_mode([tmp_path], tmpdir_short, "kiln.flatcar.kola", args, env=KOLA_ENV)
    assert not res.get("failed") and res["changed"] and "--board=%s" % BOARD in res["cmd"], res
    # a previous run's output directories (which a real run replaces) are left as they are
    (out / "run-1").mkdir(parents=True)
    (out / "run-1.tap").write_text("TAP version 13\n1..0\n")
    res = unchanged_by_check_mode([tmp_path], tmpdir_short, "kiln.flatcar.kola", args, env=KOLA_ENV)
    assert not res.get("failed") and res["changed"], res
    assert not (tmp_path / "invocations.jsonl").exists()  # kola itself never ran
    # a missing image is refused in one line, still writing nothing
    res = unchanged_by_check_mode([tmp_path], tmpdir_short, "kiln.flatcar.kola", dict(args, image=str(tmp_path / "nope.bin")),
                                  env=KOLA_ENV)
    assert res.get("failed") and "does not exist" in res["msg"] and "\n" not in res["msg"], res


# -- binpkg_cache -----------------------------------------------------------------------------------------
def test_binpkg_cache_pull_writes_nothing_in_check_mode(tmp_path, tmpdir_short):
    served = tmp_path / "served"
    pkgs = served / "boards" / BOARD / "4593.2.5" / "pkgs"
    pkgs.mkdir(parents=True)
    (pkgs / "Packages").write_text("PACKAGES: 0\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *_a, **_k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d" % server.server_address[1]
        for version, hit in (("4593.2.5", True), ("4593.2.6", False)):
            res = unchanged_by_check_mode([tmp_path], tmpdir_short, "kiln.flatcar.binpkg_cache",
                                          {"mode": "pull", "board": BOARD, "version": version, "cache_url": url})
            assert not res.get("failed") and res["hit"] is hit and res["binhost"].endswith("/%s/pkgs/" % version), res
    finally:
        server.shutdown()
        server.server_close()


def test_binpkg_cache_push_writes_nothing_in_check_mode(tmp_path, tmpdir_short, sshd, ssh_config, container):  # noqa: F811
    env = {"PATH": container["path"]}
    args = push_args(tmp_path, sshd, ssh_config, "4593.2.5+kiln-1", ssh_user="root")
    (tmp_path / "cache").mkdir()  # the cache root exists; the version's directory does not yet
    res = unchanged_by_check_mode([tmp_path], tmpdir_short, "kiln.flatcar.binpkg_cache", args, task_env=env)
    assert not res.get("failed") and res["changed"] and res["hit"] is False, res
    # a private key given as text goes into a per-run ssh-agent under TMPDIR, gone again after the run
    with open(sshd["key"]) as fh:
        keyed = dict(args, ssh_private_key=fh.read())
    res = unchanged_by_check_mode([tmp_path], tmpdir_short, "kiln.flatcar.binpkg_cache", keyed, task_env=env)
    assert not res.get("failed") and res["changed"], res
    # pushed for real, the same push in check mode is a hit
    res, _run = run_module("kiln.flatcar.binpkg_cache", args, task_env=env)
    assert res["changed"] and not res.get("failed"), res
    res = unchanged_by_check_mode([tmp_path], tmpdir_short, "kiln.flatcar.binpkg_cache", args, task_env=env)
    assert res["changed"] is False and res["hit"] is True, res


# -- build_lock -------------------------------------------------------------------------------------------
def test_build_lock_writes_nothing_in_check_mode(tmp_path, tmpdir_short):
    locks = tmp_path / "locks"
    base = {"dir": str(locks), "board": BOARD, "version": "4593.2.5", "owner": "run-a"}
    M = "kiln.flatcar.build_lock"
    res = unchanged_by_check_mode([tmp_path], tmpdir_short, M, base)  # no lock directory at all
    assert not res.get("failed") and res["changed"] and res["held"], res
    locks.mkdir()  # the lock directory exists, the board's directory and the guard file do not
    res = unchanged_by_check_mode([tmp_path], tmpdir_short, M, base)
    assert not res.get("failed") and res["changed"] and res["held"], res
    assert not (locks / BOARD).exists()
    # a live lease of another owner: a forced takeover, a renewal and a release all stay reports
    done, _run = run_module(M, dict(base, owner="run-b"))
    assert done["changed"] and done["held"], done
    for extra, changed in (({"force": True}, True), ({"owner": "run-b"}, False), ({"owner": "run-b", "state": "released"}, True)):
        res = unchanged_by_check_mode([tmp_path], tmpdir_short, M, dict(base, **extra))
        assert not res.get("failed") and res["changed"] is changed, (extra, res)
    # a corrupt lease replaced (or removed) with force: reported, not done
    with open(done["path"], "w") as fh:
        fh.write("not json")
    for state in ("acquired", "released"):
        res = unchanged_by_check_mode([tmp_path], tmpdir_short, M, dict(base, force=True, state=state))
        assert not res.get("failed") and res["changed"] and res["corrupt"], res


# -- payload_info -----------------------------------------------------------------------------------------
def test_payload_info_writes_nothing_in_check_mode(tmp_path, tmpdir_short):
    from au_testlib import openssl_pair, run_core_sign_update, sdk_layout
    scripts = sdk_layout(tmp_path / "sdk" / "trunk")  # skips without the vendored flatcar/scripts
    work = tmp_path / "work"
    work.mkdir()
    image = work / "flatcar_production_update.bin"
    image.write_bytes(os.urandom(1024 * 1024 + 4096))
    key, pub = openssl_pair(tmp_path, "au")
    payload = work / "flatcar_production_update.gz"
    run_core_sign_update(os.path.join(scripts, "core_sign_update"), work, image, payload, [(key, pub)])
    args = {"path": str(payload), "public_keys": [pub]}
    res = unchanged_by_check_mode([tmp_path], tmpdir_short, "kiln.flatcar.payload_info", args)
    assert not res.get("failed") and res["verified"] and res["changed"] is False, res
    # a payload that fails verification: one line, nothing written
    other_key, other_pub = openssl_pair(tmp_path, "other")
    res = unchanged_by_check_mode([tmp_path], tmpdir_short, "kiln.flatcar.payload_info", dict(args, public_keys=[other_pub]))
    assert res.get("failed") and "failed verification" in res["msg"] and "\n" not in res["msg"], res
    assert os.path.exists(other_key)


# -- gpg_key ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg not installed")
def test_gpg_key_writes_nothing_in_check_mode(tmp_path, tmpdir_short):
    source = tempfile.mkdtemp(prefix="kgs-")  # short: the agent socket path must fit
    os.chmod(source, 0o700)
    home = tempfile.mkdtemp(prefix="kgh-")
    os.chmod(home, 0o700)
    try:
        def gpg(*args, homedir=source):
            return subprocess.run(["gpg", "--batch", "--homedir", homedir] + list(args), capture_output=True, check=True).stdout
        gpg("--passphrase", "", "--quick-gen-key", "kiln check mode <cm@example.invalid>", "ed25519", "sign", "1y")
        fpr = [ln.split(":")[9] for ln in gpg("--with-colons", "--list-secret-keys").decode().splitlines() if ln.startswith("fpr:")][0]
        secret = gpg("--armor", "--export-secret-keys", fpr).decode()
        args = {"gnupghome": home, "fingerprint": fpr, "private_key": secret, "public_key_path": str(tmp_path / "pub" / "k.asc"),
                "log_path": str(tmp_path / "logs" / "gpg_key.log")}
        # an empty home: import and export would happen
        res = unchanged_by_check_mode([tmp_path, home], tmpdir_short, "kiln.flatcar.gpg_key", args)
        assert not res.get("failed") and res["changed"] and res["imported"] and res["public_key_written"], res
        # a home that does not exist yet
        res = unchanged_by_check_mode([tmp_path, home], tmpdir_short, "kiln.flatcar.gpg_key",
                                      dict(args, gnupghome=os.path.join(home, "new")))
        assert not res.get("failed") and res["changed"] and res["imported"], res
        # imported for real: a reimport and a new mode for the export in check mode
        res, _run = run_module("kiln.flatcar.gpg_key", args, task_env={"TMPDIR": tmpdir_short})
        assert res["changed"] and not res.get("failed"), res
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
        res = unchanged_by_check_mode([tmp_path, home], tmpdir_short, "kiln.flatcar.gpg_key",
                                      dict(args, reimport=True, public_key_mode="0600"))
        assert not res.get("failed") and res["changed"] and res["public_key_written"] and not res["imported"], res
    finally:
        for d in (source, home):
            subprocess.run(["gpgconf", "--homedir", d, "--kill", "all"], capture_output=True, check=False)
            shutil.rmtree(d, ignore_errors=True)
