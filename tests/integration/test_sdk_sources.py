"""Issue 2: sdk_checkout (forks, version pinning, idempotence, check mode) and sdk_image from a
build cache served over HTTP on 127.0.0.1 (skip when the local ID matches, refuse a bad .id)."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import threading

import pytest

from kiln_testlib import run_module
from standin_sdk import fixture as sdk

TAG = "stable-4593.2.5"


def git(*args, cwd=None):
    return subprocess.run(["git"] + list(args), cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    return base, sdk.make_scripts_origin(base / "origin", tags=[TAG])


def test_checkout_pins_build_id_once_and_is_idempotent(origin, tmp_path):
    _base, url = origin
    dest = tmp_path / "scripts"
    args = {"scripts_dir": str(dest), "repo": url, "ref": TAG}
    res, _run = run_module("kiln.flatcar.sdk_checkout", args, check=True)
    assert res["changed"] and not dest.exists()
    res, _run = run_module("kiln.flatcar.sdk_checkout", args)
    assert res["changed"], res
    version = res["version"]
    # a release tag built by a user is not official: kiln pins a build id once (Flatcar#2041)
    assert version["FLATCAR_VERSION_ID"] == "4593.2.5"
    assert version["FLATCAR_BUILD_ID"].startswith("kiln-")
    assert version["channel"] == "stable" and version["official"] is False
    text = (dest / "sdk_container/.repo/manifests/version.txt").read_text()
    assert 'FLATCAR_BUILD_ID="%s"' % version["FLATCAR_BUILD_ID"] in text
    again, _run = run_module("kiln.flatcar.sdk_checkout", args)
    assert again["changed"] is False and again["version"] == version
    check, _run = run_module("kiln.flatcar.sdk_checkout", args, check=True)
    assert check["changed"] is False
    # force re-does the checkout but keeps the pinned id
    forced, _run = run_module("kiln.flatcar.sdk_checkout", dict(args, force=True))
    assert forced["changed"] and forced["version"]["FLATCAR_BUILD_ID"] == version["FLATCAR_BUILD_ID"]


def test_official_checkout_has_no_build_id(origin, tmp_path):
    _base, url = origin
    res, _run = run_module("kiln.flatcar.sdk_checkout", {"scripts_dir": str(tmp_path / "s"), "repo": url, "ref": TAG, "official": True})
    assert res["version"]["FLATCAR_VERSION"] == "4593.2.5" and res["version"]["official"] is True


def test_fork_without_tags_needs_upstream(origin, tmp_path):
    base, url = origin
    fork = tmp_path / "fork.git"
    git("init", "-q", "--bare", str(fork))
    work = tmp_path / "forkwork"
    git("clone", "-q", "--no-tags", url, str(work))
    git("push", "-q", str(fork), "HEAD:refs/heads/flatcar-4593", cwd=str(work))
    args = {"scripts_dir": str(tmp_path / "scripts"), "repo": "file://" + str(fork), "ref": "flatcar-4593"}
    res, _run = run_module("kiln.flatcar.sdk_checkout", args)
    assert res.get("failed") and "\n" not in res["msg"]
    assert "set version, or upstream_repo for a fork" in res["msg"]
    res, _run = run_module("kiln.flatcar.sdk_checkout", dict(args, upstream_repo=url))
    assert res["changed"] and res["version"]["channel"] == "stable", res
    assert res["version"]["FLATCAR_VERSION_ID"] == "4593.2.5"


def test_local_changes_are_refused_not_discarded(origin, tmp_path):
    _base, url = origin
    dest = tmp_path / "scripts"
    args = {"scripts_dir": str(dest), "repo": url, "ref": TAG, "version": "4593.2.5+x"}
    run_module("kiln.flatcar.sdk_checkout", args)
    (dest / "build_image").write_text("local edit\n")
    res, _run = run_module("kiln.flatcar.sdk_checkout", dict(args, version="4593.2.5+y"))
    assert res.get("failed") and "has local changes (build_image)" in res["msg"]
    assert (dest / "build_image").read_text() == "local edit\n"


@pytest.fixture(scope="module")
def cache_server(tmp_path_factory):
    if os.geteuid() != 0 or not sdk.dockerd_start():
        pytest.skip("needs root and a docker daemon")
    cache = tmp_path_factory.mktemp("cache")
    # a flavour no other test uses, so removing its image cannot disturb them
    sdk.ensure_sdk_image("arm64", "4593.2.5", save_dir=str(cache))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(cache))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield cache, "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()


def test_sdk_image_from_cache_url(cache_server):
    cache, url = cache_server
    ref = sdk.sdk_image_name("arm64", "4593.2.5")  # kiln-standin.invalid/..., never the real ghcr.io name
    subprocess.run(["docker", "rmi", "-f", ref], check=False, capture_output=True)
    args = {"sdk_version": "4593.2.5", "flavour": "arm64", "source": "cache", "cache": url, "sdk_registry": sdk.STANDIN_REGISTRY}
    check, _run = run_module("kiln.flatcar.sdk_image", args, check=True)
    assert check["changed"] and check["image"]["id"] is None
    res, _run = run_module("kiln.flatcar.sdk_image", args)
    assert res["changed"] and res["source"] == "cache", res
    assert res["image"]["ref"] == ref
    idfile = cache / "containers" / "4593.2.5" / "flatcar-sdk-arm64-4593.2.5.id"
    assert res["image"]["id"].split(":")[-1] == idfile.read_text().strip().split(":")[-1]
    again, _run = run_module("kiln.flatcar.sdk_image", args)
    assert again["changed"] is False and again["source"] == "local"
    # a cache whose .id does not match what its tarball loads is refused in one line
    good = idfile.read_text()
    idfile.write_text("sha256:" + "0" * 64 + "\n")
    try:
        bad, _run = run_module("kiln.flatcar.sdk_image", args)
    finally:
        idfile.write_text(good)
    assert bad.get("failed") and "\n" not in bad["msg"] and "the cache is inconsistent" in bad["msg"]
    missing, _run = run_module("kiln.flatcar.sdk_image", dict(args, sdk_version="4593.2.6"))
    assert missing.get("failed") and "HTTP 404" in missing["msg"] and "is the SDK 4593.2.6 in the cache?" in missing["msg"]
