"""Issue 10: option values are validated before anything runs, and no remote shell command is built from them.

binpkg_cache push and artifact_transfer run against a real sshd on 127.0.0.2 (the fixture of test_publish.py), with
a stand-in ``docker`` that serves the SDK container's package directory; sdk_checkout against a local git origin.
Each injection test uses option names the old modules accepted too, so it fails on the old code (the marker file
appears, or a directory outside the cache root is emptied)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from kiln_testlib import ensure_collection_path, run_module, run_playbook
from standin_sdk import fixture as sdk
# the sshd fixture (127.0.0.2, key auth) of the publish tests
from tests.integration.test_publish import sshd  # noqa: F401 pylint: disable=unused-import

ensure_collection_path()

from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, describe_output, record_path  # noqa: E402

BOARD = "amd64-usr"
TAG = "stable-4593.2.5"


def one_line(res):
    return res.get("failed") and "\n" not in res["msg"]


@pytest.fixture
def marker():
    path = "/tmp/kiln-injected-%s" % uuid.uuid4().hex[:8]
    yield path
    if os.path.exists(path):
        os.unlink(path)


@pytest.fixture
def ssh_config(tmp_path, sshd):  # noqa: F811
    """An ssh config naming port, user and key (option names every version of the modules took)."""
    path = tmp_path / "ssh_config"
    path.write_text("Host %s\n  Port %d\n  User root\n  IdentityFile %s\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                    "  LogLevel ERROR\n" % (sshd["host"], sshd["port"], sshd["key"]))
    return str(path)


# -- binpkg_cache -----------------------------------------------------------------------------------------
@pytest.fixture
def container(tmp_path):
    """A stand-in ``docker`` on PATH whose ``cp <name>:<path> <dest>`` copies from a local tree."""
    root = tmp_path / "container"
    pkgs = root / ("build/%s/var/lib/portage/pkgs" % BOARD)
    (pkgs / "app-misc").mkdir(parents=True)
    (pkgs / "app-misc" / "hello-1.gpkg.tar").write_bytes(b"a binary package\n")
    (pkgs / "Packages").write_text("PACKAGES: 1\n\nCPV: app-misc/hello-1\n")
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    docker = fakebin / "docker"
    docker.write_text('#!/bin/sh\n[ "$1" = cp ] || exit 1\nsrc=${2#*:}\ncase "$src" in\n'
                      '  */.) exec cp -a "%s${src%%/.}/." "$3" ;;\n  *) exec cp -a "%s$src" "$3" ;;\nesac\n' % (root, root))
    docker.chmod(0o755)
    return {"path": str(fakebin) + os.pathsep + os.environ["PATH"], "pkgs": pkgs}


def push_args(tmp_path, sshd, ssh_config, version, **extra):  # noqa: F811
    args = dict(mode="push", board=BOARD, version=version, container_name="sdk", staging_dir=str(tmp_path / "staging"),
                cache_host=sshd["host"], cache_root=str(tmp_path / "cache"), ssh_config=ssh_config)
    args.update(extra)
    return args


def test_binpkg_push_version_cannot_run_a_command_on_the_cache_host(tmp_path, sshd, ssh_config, container, marker):  # noqa: F811
    args = push_args(tmp_path, sshd, ssh_config, "4593.2.6;touch${IFS}%s;true" % marker, cache_user="root")
    res, _run = run_module("kiln.flatcar.binpkg_cache", args, task_env={"PATH": container["path"]})
    assert not os.path.exists(marker), "the version ran a command on the cache host"
    assert one_line(res) and ("is not a FLATCAR_VERSION" in res["msg"] or "malformed" in res["msg"]), res


def test_binpkg_push_version_cannot_leave_the_cache_root(tmp_path, sshd, ssh_config, container):  # noqa: F811
    victim = tmp_path / "victim" / "pkgs"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("not the cache's\n")
    args = push_args(tmp_path, sshd, ssh_config, "../../../victim", cache_user="root")
    res, _run = run_module("kiln.flatcar.binpkg_cache", args, task_env={"PATH": container["path"]})
    assert (victim / "keep.txt").exists(), "rsync --delete emptied a directory outside cache_root"
    assert one_line(res), res


def test_binpkg_push_creates_the_cache_dir_without_a_shell(tmp_path, sshd, ssh_config, container):  # noqa: F811
    args = push_args(tmp_path, sshd, ssh_config, "4593.2.5+kiln-1", ssh_user="root")
    env = {"PATH": container["path"]}
    res, _run = run_module("kiln.flatcar.binpkg_cache", args, check=True, task_env=env)
    assert res["changed"] and not res.get("failed"), res
    assert not (tmp_path / "staging").exists() and not (tmp_path / "cache").exists(), "check mode wrote something"
    res, _run = run_module("kiln.flatcar.binpkg_cache", args, task_env=env)
    assert res["changed"] and res["package_count"] == 1, res
    dest = tmp_path / "cache" / "boards" / BOARD / "4593.2.5+kiln-1" / "pkgs"
    assert (dest / "Packages").read_text() == (container["pkgs"] / "Packages").read_text()
    assert (dest / "app-misc" / "hello-1.gpkg.tar").exists()
    again, _run = run_module("kiln.flatcar.binpkg_cache", args, task_env=env)
    assert again["changed"] is False and again["hit"] is True, again


def test_binpkg_old_option_names_still_work_with_a_deprecation(tmp_path, sshd, ssh_config, container):  # noqa: F811
    args = push_args(tmp_path, sshd, ssh_config, "4593.2.5", cache_user="root", ssh_key=sshd["key"],
                     ssh_options=["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"])
    res, _run = run_module("kiln.flatcar.binpkg_cache", args, task_env={"PATH": container["path"]})
    assert res["changed"] and not res.get("failed"), res
    names = " ".join(d.get("msg", "") for d in res.get("deprecations", []))
    for old in ("cache_user", "ssh_key", "ssh_options"):
        assert old in names, res.get("deprecations")


# -- artifact_transfer ------------------------------------------------------------------------------------
def make_record(tmp_path, version="4593.2.5+kiln-1"):
    root = tmp_path / "src"
    build_dir = root / "images" / BOARD / ("developer-%s-a1" % version)
    build_dir.mkdir(parents=True)
    image = build_dir / "flatcar_production_image.bin"
    image.write_bytes(b"an image\n" * 100)
    path = record_path(str(root), BOARD, version)
    with BuildRecord.open(path, board=BOARD, version={"FLATCAR_VERSION": version}, build_root=str(root)) as rec:
        rec.begin("image", {}, "sha256:" + "0" * 64)
        rec.finish("image", [describe_output(str(root), str(image), "generic_image")], {})
    return path


def test_transfer_dest_build_root_cannot_run_a_command(tmp_path, sshd, ssh_config, marker):  # noqa: F811
    path = make_record(tmp_path)
    args = dict(record_path=path, dest_host=sshd["host"], dest_build_root="%s/dst;touch %s" % (tmp_path, marker), ssh_config=ssh_config)
    res, _run = run_module("kiln.flatcar.artifact_transfer", args)
    assert not os.path.exists(marker), "dest_build_root ran a command on the destination"
    assert one_line(res) and "dest_build_root" in res["msg"], res


def test_transfer_makes_the_dest_root_and_verifies(tmp_path, sshd, ssh_config):  # noqa: F811
    path = make_record(tmp_path)
    dest = tmp_path / "dst" / "nested" / "root"
    args = dict(record_path=path, dest_host=sshd["host"], dest_build_root=str(dest), ssh_config=ssh_config, ssh_user="root")
    res, _run = run_module("kiln.flatcar.artifact_transfer", args, check=True)
    assert res["changed"] and not dest.exists(), res
    res, _run = run_module("kiln.flatcar.artifact_transfer", args)
    assert res["changed"] and res["verified"] == 1, res
    assert (dest / "images" / BOARD / "developer-4593.2.5+kiln-1-a1" / "flatcar_production_image.bin").exists()
    again, _run = run_module("kiln.flatcar.artifact_transfer", args)
    assert again["changed"] is False, again


def test_transfer_refuses_a_recorded_path_outside_the_build_root(tmp_path, sshd, ssh_config):  # noqa: F811
    path = make_record(tmp_path)
    with open(path) as fh:
        data = json.load(fh)
    (tmp_path / "outside").write_bytes(b"secret")
    data["stages"]["image"]["outputs"][0].update(path="../outside", size=6)
    with open(path, "w") as fh:
        json.dump(data, fh)
    args = dict(record_path=path, dest_host=sshd["host"], dest_build_root=str(tmp_path / "dst"), ssh_config=ssh_config)
    res, _run = run_module("kiln.flatcar.artifact_transfer", args)
    # refused where the record is loaded (JSON Schema: relative paths without '..') or, failing that, by the transfer
    assert one_line(res) and ("is invalid at $.stages.image.outputs[0].path" in res["msg"] or "contains '..'" in res["msg"]), res
    assert not (tmp_path / "dst").exists()


# -- sdk_checkout -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    return sdk.make_scripts_origin(tmp_path_factory.mktemp("optsources") / "origin", tags=[TAG])


def test_checkout_upstream_repo_is_not_a_git_option(origin, tmp_path, marker):
    dest = tmp_path / "scripts"
    run_module("kiln.flatcar.sdk_checkout", {"scripts_dir": str(dest), "repo": origin, "ref": TAG})
    res, _run = run_module("kiln.flatcar.sdk_checkout", {"dest": str(dest), "repo": origin, "ref": TAG,
                                                         "upstream_repo": "--upload-pack=touch %s;true" % marker})
    assert not os.path.exists(marker), "upstream_repo ran a command through git fetch --upload-pack"
    assert one_line(res) and "upstream_repo" in res["msg"], res


def test_checkout_build_id_is_validated_before_the_checkout_is_touched(origin, tmp_path):
    dest = tmp_path / "scripts"
    res, _run = run_module("kiln.flatcar.sdk_checkout", {"dest": str(dest), "repo": origin, "ref": TAG, "build_id": "kiln 1;x"})
    assert not dest.exists(), "the checkout was cloned before build_id was validated"
    assert one_line(res) and "build_id" in res["msg"], res


def test_checkout_diff_record_and_old_name(origin, tmp_path):
    dest = tmp_path / "scripts"
    args = {"scripts_dir": str(dest), "repo": origin, "ref": TAG, "version": "4593.2.5+opt-1", "board": BOARD}
    with open(tmp_path / "pb.yml", "w") as fh:
        json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": [{"name": "co", "kiln.flatcar.sdk_checkout": args}]}], fh)
    run = run_playbook(str(tmp_path / "pb.yml"), args=["--diff"], check=True)
    res = run.result("co")
    assert res["changed"] and res["diff"]["before"] == {"commit": None, "version": None}, res
    assert res["diff"]["after"]["version"] == "4593.2.5+opt-1" and not dest.exists()
    run = run_playbook(str(tmp_path / "pb.yml"), args=["--diff"])
    res = run.result("co")
    assert res["changed"] and res["diff"]["after"]["commit"] == res["commit"], res
    assert res["diff"]["after"]["version"] == "4593.2.5+opt-1"
    assert res["record_path"] == record_path(str(dest / "__build__" / "images"), BOARD, "4593.2.5+opt-1")
    with open(res["record_path"]) as fh:
        version = json.load(fh)["version"]
    assert version["FLATCAR_VERSION"] == "4593.2.5+opt-1" and version["channel"] == "developer" and version["FLATCAR_SDK_VERSION"]
    # the old name works, with a deprecation; nothing changes on a rerun
    again, _run = run_module("kiln.flatcar.sdk_checkout", dict(args, dest=args.pop("scripts_dir")))
    assert again["changed"] is False, again
    assert any("dest" in d.get("msg", "") for d in again.get("deprecations", [])), again.get("deprecations")


def test_checkout_channel_reaches_the_record(origin, tmp_path):
    dest = tmp_path / "scripts"
    res, _run = run_module("kiln.flatcar.sdk_checkout", {"scripts_dir": str(dest), "repo": origin, "ref": TAG, "board": BOARD})
    with open(res["record_path"]) as fh:
        assert json.load(fh)["version"]["channel"] == "stable"
    subprocess.run(["git", "-C", str(dest), "status"], check=True, capture_output=True)
