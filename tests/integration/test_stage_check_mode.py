"""Every module on the stage engine writes nothing in check mode (real ansible-playbook --check runs): the build
root, the state directory, the destination and TMPDIR are snapshotted (listing, type, size, mtime) around the run.
Also: a refusal of update_payload is recorded like one of artifact_sign, and the lock is released."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from kiln_testlib import fs_changes, fs_snapshot, run_module  # noqa: E402
from test_signing import BOARD, VERSION, bundle, gen_key, kill_agent, make_build, new_home, openssl_pair  # noqa: E402

from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, RecordLocked  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg not installed")


def snapshot(tmp_path, tmpdir):
    """(type, size, mtime) of every entry under ``tmp_path`` (build root, state dir, destination, cache) and
    ``tmpdir``. TMPDIR's own mtime is left out: gpg needs a private scratch directory there, which it removes
    again (what is in TMPDIR, and everything else, must be unchanged)."""
    return fs_snapshot((tmp_path, tmpdir), volatile_roots=(tmpdir,))


@pytest.fixture()
def tmpdir_short():
    """TMPDIR for the module: short, so gpg-agent's socket path under it fits."""
    path = tempfile.mkdtemp(prefix="ks-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unchanged_by_check_mode(tmp_path, module, args, env=None):
    tmpdir = os.environ["KILN_TEST_TMPDIR"]
    before = snapshot(str(tmp_path), tmpdir)
    res, _run = run_module(module, args, check=True, task_env=dict(env or {}, TMPDIR=tmpdir))
    after = snapshot(str(tmp_path), tmpdir)
    assert not res.get("failed"), res.get("msg")
    changes = fs_changes(before, after)
    assert not changes, changes
    return res


@pytest.fixture(autouse=True)
def _module_tmpdir(tmpdir_short, monkeypatch):
    monkeypatch.setenv("KILN_TEST_TMPDIR", tmpdir_short)


@pytest.fixture(scope="module")
def key():
    home = new_home()
    fpr = gen_key(home, "Kiln Stage <stage@example.invalid>")
    with open(os.path.join(home, "pub.asc"), "wb") as fh:
        from test_signing import gpg
        fh.write(gpg(home, "--armor", "--export", fpr).stdout)
    yield home, fpr
    kill_agent(home)
    shutil.rmtree(home, ignore_errors=True)


def lock_is_free(path):
    try:
        BuildRecord.open(str(path), create=False).close()
        return True
    except RecordLocked:
        return False


def test_signing_modules_write_nothing_in_check_mode(tmp_path, key):
    home, fpr = key
    root, build, rec_path = make_build(tmp_path)
    sign = {"record_path": str(rec_path), "key_fingerprint": fpr, "gnupghome": home}
    res = unchanged_by_check_mode(tmp_path, "kiln.flatcar.artifact_sign", sign)
    assert res["changed"] and len(res["signed"]) == 5 and res["log_path"].endswith("logs/sign.log")
    assert not os.path.exists(res["log_path"])
    # no record, default log: the private $TMPDIR/kiln-<uid> directory is not made either
    res = unchanged_by_check_mode(tmp_path, "kiln.flatcar.artifact_sign", {"directory": str(build), "key_fingerprint": fpr,
                                                                           "gnupghome": home})
    assert res["changed"] and res["log_path"] == os.path.join(os.environ["KILN_TEST_TMPDIR"], "kiln-%d" % os.getuid(), "artifact_sign.log")
    # signed for real, then verify (and sign again) in check mode
    done, _run = run_module("kiln.flatcar.artifact_sign", sign)
    assert done["changed"] and not done.get("failed"), done
    res = unchanged_by_check_mode(tmp_path, "kiln.flatcar.artifact_sign", sign)
    assert res["changed"] is False and len(res["unchanged"]) == 5
    res = unchanged_by_check_mode(tmp_path, "kiln.flatcar.artifact_verify", {"record_path": str(rec_path),
                                                                             "public_key": os.path.join(home, "pub.asc")})
    assert len(res["verified"]) == 5 and res["record_path"] == str(rec_path)
    assert lock_is_free(rec_path)


def test_update_payload_writes_nothing_in_check_mode_and_records_a_refusal(tmp_path):
    _root, build, rec_path = make_build(tmp_path)
    bundle(build)
    keys = tmp_path / "keys"
    keys.mkdir()
    pkey, pubk = openssl_pair(str(keys), "au")
    args = {"record_path": str(rec_path), "private_keys": [pkey], "public_keys": [pubk]}
    res = unchanged_by_check_mode(tmp_path, "kiln.flatcar.update_payload", args)
    assert res["changed"] and {p["action"] for p in res["payloads"]} == {"build"}
    # a refusal while the stage holds the record is recorded (as artifact_sign's are), and the lock is released
    (build / "flatcar_production_update.bin").write_bytes(os.urandom(4096))
    res, _run = run_module("kiln.flatcar.update_payload", args)
    assert res.get("failed") and "no longer matches the build record" in res["msg"] and "\n" not in res["msg"]
    entry = json.load(open(rec_path))["stages"]["payload"]
    assert entry["status"] == "failed" and entry["message"] == res["msg"] and lock_is_free(rec_path)


def test_boot_check_writes_nothing_in_check_mode(tmp_path):
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("QEMU is not installed")
    root, build, rec_path = make_build(tmp_path)
    image = build / "flatcar_production_image.bin"
    image.write_bytes(os.urandom(1 << 20))
    with BuildRecord.open(str(rec_path), create=False) as rec:
        from ansible_collections.kiln.flatcar.plugins.module_utils._record import describe_output
        rec.begin("image", {"x": 1}, "sha256:" + "0" * 64)
        rec.finish("image", [describe_output(str(root), str(image), "generic_image")])
    args = {"record_path": str(rec_path), "board": BOARD, "firmware": "bios", "accel": "tcg",
            "cache_dir": str(tmp_path / "cache")}
    res = unchanged_by_check_mode(tmp_path, "kiln.flatcar.boot_check", args)
    assert res["verdict"] == "would_run" and res["image"]["path"] == str(image) and res["stage"] == "boot_check:bios"
    assert not os.path.exists(os.path.dirname(res["console_log"]))


def test_artifact_transfer_writes_nothing_in_check_mode(tmp_path):
    _root, _build, rec_path = make_build(tmp_path)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text('#!/bin/sh\n# ssh stand-in: run the remote command here\n'
                              'while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done\nshift 2\nexec sh -c "$*"\n')
    os.chmod(fake / "ssh", 0o755)
    (tmp_path / "dest").mkdir()
    res = unchanged_by_check_mode(tmp_path, "kiln.flatcar.artifact_transfer", {
        "record_path": str(rec_path), "dest_host": "signer.invalid", "dest_build_root": str(tmp_path / "dest"),
        "stages": ["image"]}, env={"PATH": "%s:%s" % (fake, os.environ["PATH"])})
    assert res["changed"] and len(res["sent"]) == 5 and res["dest_record_path"].startswith(str(tmp_path / "dest"))
    assert not os.path.exists(res["log_path"])


def test_nebraska_package_from_a_record_writes_nothing_in_check_mode(tmp_path):
    from nebraska_stub import SPEC_PATH, NebraskaStub
    if not os.path.exists(SPEC_PATH):
        pytest.skip("Nebraska spec not found at %s" % SPEC_PATH)
    import base64
    import hashlib
    from ansible_collections.kiln.flatcar.plugins.module_utils._record import describe_output
    root, build, rec_path = make_build(tmp_path)
    payload = build / "flatcar_production_update.gz"
    payload.write_bytes(b"payload")
    with BuildRecord.open(str(rec_path), create=False) as rec:
        rec.begin("payload", {}, "sha256:" + "0" * 64)
        rec.finish("payload", [describe_output(str(root), str(payload), "update_payload")], {"payloads": [{
            "name": payload.name, "size": 7, "sha1_base64": base64.b64encode(hashlib.sha1(b"payload").digest()).decode(),
            "sha256_base64": base64.b64encode(hashlib.sha256(b"payload").digest()).decode(),
            "sha256_hex": hashlib.sha256(b"payload").hexdigest(), "signature_count": 1}]})
    stub = NebraskaStub(token="t0ken").start()
    try:
        res = unchanged_by_check_mode(tmp_path, "kiln.flatcar.nebraska_package", {
            "url": stub.url, "token": "t0ken", "version": VERSION, "arch": "amd64", "record_path": str(rec_path),
            "package_url": "http://m/update/amd64-usr/%s/" % VERSION})
        assert res["changed"] and res["created"]
    finally:
        stub.stop()
