"""kiln.flatcar.nebraska_package against a Nebraska stub that validates every request against Nebraska's OpenAPI spec
(read from <repo>/../shared/vendor/nebraska/openapi-spec.yaml)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from kiln_testlib import run_module  # noqa: E402
from nebraska_stub import SPEC_PATH, NebraskaStub  # noqa: E402

APP = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"
TOKEN = "s3cr3t-nebraska-token-%s" % os.getpid()

pytestmark = pytest.mark.skipif(not os.path.exists(SPEC_PATH), reason="Nebraska spec not found at %s" % SPEC_PATH)


@pytest.fixture()
def stub():
    s = NebraskaStub(token=TOKEN).start()
    yield s
    s.stop()


def payload_file(tmp_path, content=b"CrAU payload"):
    path = tmp_path / "flatcar_production_update.gz"
    path.write_bytes(gzip.compress(content, mtime=0))
    data = path.read_bytes()
    return str(path), {"size": len(data), "sha1_b64": base64.b64encode(hashlib.sha1(data).digest()).decode(),
                       "sha256_b64": base64.b64encode(hashlib.sha256(data).digest()).decode()}


def raw(stub, method, path, body=None, token=TOKEN, ctype="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(stub.url + path, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_stub_enforces_the_spec(stub):
    good = {"application_id": APP, "arch": 1, "channels_blacklist": [], "description": "d", "filename": "f.gz",
            "hash": "aGFzaA==", "size": "10", "type": 1, "url": "http://x/", "version": "1.2.3",
            "flatcar_action": {"sha256": "c2hh"}}
    assert raw(stub, "POST", "/api/apps/%s/packages" % APP, good, token=None)[0] == 401
    assert raw(stub, "POST", "/api/apps/%s/packages" % APP, good, token="wrong")[0] == 401
    for broken in (dict(good, size=10),                          # size is a string in packageConfig
                   dict(good, arch="amd64"),                     # arch is an integer
                   {k: v for k, v in good.items() if k != "hash"},  # required
                   dict(good, flatcarAction={"sha256": "x"}),    # wire name is flatcar_action
                   dict(good, extra_files=[{"name": "a", "size": 3}])):  # extra file size is a string
        status, err = raw(stub, "POST", "/api/apps/%s/packages" % APP, broken)
        assert status == 400, (broken, status, err)
    assert raw(stub, "POST", "/api/apps/%s/packages" % APP, good, ctype="text/plain")[0] == 400
    assert raw(stub, "GET", "/api/apps/%s/packages?perpage=5" % APP)[0] == 400  # minimum 10
    assert raw(stub, "GET", "/api/apps/%s/packages?page=x" % APP)[0] == 400
    status, pkg = raw(stub, "POST", "/api/apps/%s/packages" % APP, good)
    assert status == 200 and pkg["flatcar_action"]["sha256"] == "c2hh" and pkg["created_ts"]
    status, page = raw(stub, "GET", "/api/apps/%s/packages?page=1&perpage=10&searchVersion=1.2.3" % APP)
    assert status == 200 and page["totalCount"] == 1
    assert raw(stub, "GET", "/api/apps/%s/groups" % APP)[0] == 404  # not part of the stub


def test_register_idempotent_conflict_and_promote(stub, tmp_path):
    path, ident = payload_file(tmp_path)
    ext = tmp_path / "oem-azure.gz"
    ext.write_bytes(gzip.compress(b"oem", mtime=0))
    args = {"url": stub.url, "token": TOKEN, "version": "4593.2.5+kiln-1", "arch": "amd64",
            "package_url": "http://mirror.example/update/amd64-usr/4593.2.5+kiln-1", "payload_path": path,
            "extra_files": [{"path": str(ext)}]}
    res, run = run_module("kiln.flatcar.nebraska_package", args)
    assert run.rc == 0, (res, run.stdout[-3000:])
    assert res["changed"] is True and res["created"] is True
    pkg = res["package"]
    assert pkg["arch"] == 1 and pkg["type"] == 1 and pkg["hash"] == ident["sha1_b64"] and pkg["size"] == str(ident["size"])
    assert pkg["flatcar_action"]["sha256"] == ident["sha256_b64"]
    assert pkg["url"].endswith("/4593.2.5+kiln-1/") and pkg["filename"] == "flatcar_production_update.gz"
    assert pkg["extra_files"][0]["name"] == "oem-azure.gz"
    assert pkg["extra_files"][0]["hash256"] == hashlib.sha256(ext.read_bytes()).hexdigest()
    # the token travels only as a bearer header and never shows up in Ansible's output
    posts = [r for r in stub.requests if r["method"] == "POST"]
    assert posts and all(r["headers"].get("Authorization") == "Bearer " + TOKEN for r in stub.requests)
    assert all(TOKEN not in r["path"] and TOKEN not in r["body"] for r in stub.requests)
    assert TOKEN not in run.stdout and TOKEN not in run.stderr and TOKEN not in json.dumps(run.events)

    # identical again (explicit hashes this time): unchanged, nothing posted
    before = len(stub.requests)
    explicit = dict((k, v) for k, v in args.items() if k != "payload_path")
    res2, run2 = run_module("kiln.flatcar.nebraska_package", dict(explicit, payload=ident))
    assert run2.rc == 0 and res2["changed"] is False and res2["package_id"] == pkg["id"], res2
    assert not [r for r in stub.requests[before:] if r["method"] != "GET"]

    # different content under the same version: error, nothing changed
    (tmp_path / "other").mkdir()
    other = payload_file(tmp_path / "other", b"other payload")[0]
    res3, run3 = run_module("kiln.flatcar.nebraska_package", dict(args, payload_path=other))
    assert run3.rc != 0 and "different hash" in res3["msg"], res3
    assert len(stub.packages) == 1

    # arm64 of the same version is another package
    res4, run4 = run_module("kiln.flatcar.nebraska_package", dict(args, arch="arm64", extra_files=[]))
    assert run4.rc == 0 and res4["created"] and res4["package"]["arch"] == 2

    # promotion: missing channel is an error unless create_channel; then forward only
    res5, run5 = run_module("kiln.flatcar.nebraska_package", dict(args, channel="kiln-stable"))
    assert run5.rc != 0 and "no channel" in res5["msg"]
    stub.add_channel(APP, "kiln-stable", 1)
    res6, run6 = run_module("kiln.flatcar.nebraska_package", dict(args, channel="kiln-stable"))
    assert run6.rc == 0 and res6["channel"]["changed"] is True and res6["changed"] is True, res6
    chan = [c for c in stub.channels.values() if c["name"] == "kiln-stable"][0]
    assert chan["package_id"] == pkg["id"]
    res7, run7 = run_module("kiln.flatcar.nebraska_package", dict(args, channel="kiln-stable"))
    assert run7.rc == 0 and res7["changed"] is False
    # an older version registers but does not pull the channel back
    (tmp_path / "old").mkdir()
    old_path = payload_file(tmp_path / "old", b"old payload")[0]
    res8, run8 = run_module("kiln.flatcar.nebraska_package", dict(args, version="4593.1.0", payload_path=old_path, extra_files=[],
                                                                  channel="kiln-stable"))
    assert run8.rc == 0 and res8["created"] and res8["channel"]["changed"] is False, res8
    assert chan["package_id"] == pkg["id"]
    # check mode posts nothing
    before = len(stub.requests)
    res9, run9 = run_module("kiln.flatcar.nebraska_package", dict(args, version="4600.0.0", extra_files=[]), check=True)
    assert run9.rc == 0 and res9["changed"] is True
    assert not [r for r in stub.requests[before:] if r["method"] != "GET"]


def test_register_from_build_record(stub, tmp_path):
    from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, describe_output, record_path
    build_root = str(tmp_path / "build")
    d = os.path.join(build_root, "images", "arm64-usr", "developer-4700.0.0-a1")
    os.makedirs(d)
    p = os.path.join(d, "flatcar_production_update.gz")
    with open(p, "wb") as fh:
        fh.write(gzip.compress(b"arm payload", mtime=0))
    data = open(p, "rb").read()
    rp = record_path(build_root, "arm64-usr", "4700.0.0")
    with BuildRecord.open(rp, board="arm64-usr", version={"FLATCAR_VERSION": "4700.0.0"}, build_root=build_root) as rec:
        rec.begin("payload", {}, "sha256:" + "0" * 64)
        # the format kiln.flatcar.update_payload records
        rec.finish("payload", [describe_output(build_root, p, "update_payload")], {"payloads": [{
            "name": "flatcar_production_update.gz", "size": len(data), "sha1_base64": base64.b64encode(hashlib.sha1(data).digest()).decode(),
            "sha256_base64": base64.b64encode(hashlib.sha256(data).digest()).decode(), "sha256_hex": hashlib.sha256(data).hexdigest(),
            "signature_count": 1}, {"name": "oem-azure.gz", "size": 3, "sha1_base64": "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                                    "sha256_base64": "x", "sha256_hex": "ab" * 32, "signature_count": 1}]})
    stub.add_channel(APP, "stable", 2)
    res, run = run_module("kiln.flatcar.nebraska_package", {
        "url": stub.url, "token": TOKEN, "version": "4700.0.0", "arch": "arm64", "record_path": rp,
        "package_url": "http://m/update/arm64-usr/4700.0.0/", "channel": "stable"})
    assert run.rc == 0, res
    assert res["package"]["size"] == str(len(data)) and res["channel"]["changed"] is True
    assert res["package"]["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()
    assert [f["name"] for f in res["package"]["extra_files"]] == ["oem-azure.gz"]
    assert res["package"]["extra_files"][0]["hash256"] == "ab" * 32

    # the same list handed over directly (what the pipeline and rollback.yml do from the controller): the same package
    listed = json.load(open(rp))["stages"]["payload"]["details"]["payloads"]
    res2, run = run_module("kiln.flatcar.nebraska_package", {
        "url": stub.url, "token": TOKEN, "version": "4700.0.0", "arch": "arm64", "payloads": listed,
        "package_url": "http://m/update/arm64-usr/4700.0.0/", "channel": "stable"})
    assert run.rc == 0 and res2["changed"] is False, res2
    assert res2["package"]["hash"] == res["package"]["hash"] and res2["package"]["extra_files"] == res["package"]["extra_files"]
    res3, run = run_module("kiln.flatcar.nebraska_package", {
        "url": stub.url, "token": TOKEN, "version": "4700.0.1", "arch": "arm64", "payloads": [],
        "package_url": "http://m/update/arm64-usr/4700.0.1/"})
    assert run.rc != 0 and res3["msg"].startswith("payloads is empty"), res3
