"""`hack/demo.sh down` (what `make demo-clean` and the end of `hack/demo.sh up` point at) removes everything
the demo made, run directly with no venv on PATH, from a prepared demo state: a fleet (network namespace,
sshd), an SDK container, a gpg-agent, a mount and a loop device under the demo dir, the stand-in image and
the test cache the demo recorded as its own, and dockerd when the demo started it (a stub here: the real
one serves the other tests). Whatever the demo did not create stays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.fleet import harness  # noqa: E402
from tests.standin_sdk import fixture as sdk  # noqa: E402

BUILT = "kiln-demo-clean-test:built"
KEPT = "kiln-demo-clean-test:kept"
# a stand-in image under the real SDK's name, as kiln before issue 14 tagged it: down removes it (the label says it is ours)
LEGACY = "ghcr.io/flatcar/flatcar-sdk-all:0.0.9-kiln-demo-clean"


def upstream_images():
    return run("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "ghcr.io/flatcar/*").stdout.split()


def run(*argv, **kw):
    return subprocess.run(list(argv), capture_output=True, text=True, check=kw.pop("check", True), **kw)


def image_exists(name):
    return run("docker", "image", "inspect", name, check=False).returncode == 0


@pytest.fixture
def demo(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, mounts)")
    reason = harness.skip_reason()
    if reason:
        pytest.skip(reason)
    if not sdk.dockerd_start():
        pytest.skip("docker does not work here")
    # short: gpg-agent's socket lives in the gnupg home (sun_path is 108 bytes)
    d = Path(tempfile.mkdtemp(prefix="kdc-", dir="/tmp"))
    info = {"dir": d, "cache": tmp_path / "kiln-test-cache", "fid": None, "loop": None,
            "gnupg": d / "fleet" / "hosts" / "signer" / "gnupg",
            "stub": tmp_path / "dockerd-stub.sh", "stub_log": tmp_path / "dockerd-stub.log"}
    try:
        (info["cache"] / "boot-assets").mkdir(parents=True)
        # tiny images from a one-file tarball (no registry)
        tar = tmp_path / "rootfs.tar"
        (tmp_path / "hello").write_text("hi\n")
        with tarfile.open(tar, "w") as t:
            t.add(tmp_path / "hello", arcname="hello")
        for name in (BUILT, KEPT):
            run("docker", "import", str(tar), name)
        run("docker", "import", "--change", "LABEL org.kiln.standin-sdk.hash=legacy", str(tar), LEGACY)
        # a fleet of one host, as demo_fleet.py up makes it
        run(sys.executable, "-m", "tests.fleet.harness", "up", "--dir", str(d / "fleet"), "--prefix", "kdclean",
            "--hosts", json.dumps({"signer": {}}), cwd=REPO)
        info["fid"] = json.loads((d / "fleet" / "fleet.json").read_text())["fleet_id"]
        (d / "fid").write_text(info["fid"])
        run("docker", "create", "--name", "kiln-%s-sdk" % info["fid"], BUILT, "/hello")
        info["gnupg"].mkdir(mode=0o700, parents=True)
        run("gpg-connect-agent", "--homedir", str(info["gnupg"]), "/bye")
        (d / "mnt").mkdir()
        run("mount", "-t", "tmpfs", "kiln-demo-clean", str(d / "mnt"))
        img = d / "disk.img"
        with open(img, "wb") as f:
            f.truncate(4 << 20)
        info["loop"] = run("losetup", "--find", "--show", str(img)).stdout.strip()
        info["stub"].write_text('#!/bin/sh\necho "$@" >> %s\necho "dockerd stopped"\n' % info["stub_log"])
        info["stub"].chmod(0o755)
        (d / "demo-state.json").write_text(json.dumps({
            "cache_dir": str(info["cache"]), "cache_created": True, "dockerd_started": True,
            "images_built": [BUILT]}))
        yield info
    finally:
        # whatever the down path (or this setup) left, so one failure does not leak into the next tests
        subprocess.run(["umount", "--lazy", str(d / "mnt")], capture_output=True, check=False)
        if info["loop"]:
            subprocess.run(["losetup", "--detach", info["loop"]], capture_output=True, check=False)
        if (d / "fleet" / "fleet.json").exists():
            subprocess.run([sys.executable, "-m", "tests.fleet.harness", "down", "--dir", str(d / "fleet")],
                           cwd=REPO, capture_output=True, check=False)
        if info["fid"]:
            subprocess.run(["docker", "rm", "-f", "kiln-%s-sdk" % info["fid"]], capture_output=True, check=False)
        subprocess.run(["docker", "image", "rm", "-f", BUILT, KEPT, LEGACY], capture_output=True, check=False)
        if info["gnupg"].is_dir():
            subprocess.run(["gpgconf", "--homedir", str(info["gnupg"]), "--kill", "all"], capture_output=True, check=False)
        if not os.path.ismount(d / "mnt"):
            subprocess.run(["rm", "-rf", "--one-file-system", "--", str(d)], check=False)


def agent_running(gh):
    return run("pgrep", "-f", "gpg-agent --homedir %s" % gh, check=False).returncode == 0


def test_demo_down_run_directly_removes_everything_the_demo_made(demo):
    d = demo["dir"]
    assert agent_running(demo["gnupg"]) and os.path.ismount(d / "mnt") and image_exists(BUILT)
    netns = [ns for ns in os.listdir("/run/netns") if ns.startswith(demo["fid"])]
    assert netns
    # as a user would type it: no venv on PATH, not through make
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "KILN_DEMO_DIR": str(d), "KILN_DEMO_DOCKERD_SH": str(demo["stub"])}
    res = subprocess.run([str(REPO / "hack" / "demo.sh"), "down"], env=env, capture_output=True, text=True,
                         check=False, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not d.exists()
    assert not demo["cache"].exists()
    assert not image_exists(BUILT)
    assert image_exists(KEPT)                     # not the demo's: stays
    assert not upstream_images()                  # no image named ghcr.io/flatcar/* (stand-ins never carry it)
    assert run("docker", "container", "inspect", "kiln-%s-sdk" % demo["fid"], check=False).returncode != 0
    assert not [ns for ns in os.listdir("/run/netns") if ns.startswith(demo["fid"])]
    assert not agent_running(demo["gnupg"])
    assert demo["loop"] not in run("losetup", "--list", "--noheadings", "--output", "NAME").stdout.split()
    assert demo["stub_log"].read_text().split() == ["stop"]


def test_demo_down_keeps_what_the_demo_did_not_make(demo):
    d = demo["dir"]
    (d / "demo-state.json").write_text(json.dumps({
        "cache_dir": str(demo["cache"]), "cache_created": False, "dockerd_started": False, "images_built": []}))
    env = dict(os.environ, KILN_DEMO_DIR=str(d), KILN_DEMO_DOCKERD_SH=str(demo["stub"]))
    res = subprocess.run([str(REPO / "hack" / "demo.sh"), "down"], env=env, capture_output=True, text=True,
                         check=False, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not d.exists()
    assert demo["cache"].is_dir() and image_exists(BUILT)
    assert not demo["stub_log"].exists()


def test_demo_down_refuses_what_is_not_a_demo_or_not_ours(tmp_path):
    env = dict(os.environ, KILN_DEMO_DOCKERD_SH="/bin/false")
    other = tmp_path / "not-a-demo"
    other.mkdir()
    (other / "precious").write_text("x")
    res = subprocess.run([str(REPO / "hack" / "demo.sh"), "down"], env=dict(env, KILN_DEMO_DIR=str(other)),
                         capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode != 0 and "holds no demo" in res.stderr
    assert (other / "precious").exists()
    # a state file someone else could have written (group/world-writable) names the cache to remove
    fake = tmp_path / "planted"
    fake.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (fake / "demo-state.json").write_text(json.dumps({"cache_dir": str(victim), "cache_created": True}))
    os.chmod(fake / "demo-state.json", 0o666)
    res = subprocess.run([str(REPO / "hack" / "demo.sh"), "down"], env=dict(env, KILN_DEMO_DIR=str(fake)),
                         capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode != 0 and "writable by others" in res.stderr
    assert victim.exists() and fake.exists()
    (fake / "demo-state.json").chmod(0o600)
    (fake / "demo-state.json").write_text(json.dumps({"cache_dir": "/", "cache_created": True}))
    res = subprocess.run([str(REPO / "hack" / "demo.sh"), "down"], env=dict(env, KILN_DEMO_DIR=str(fake)),
                         capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode != 0 and "odd cache directory" in res.stderr
