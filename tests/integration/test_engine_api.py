"""sdk_image through the Docker SDK for Python and through the docker CLI, against the real Docker daemon:
a tiny image saved like Flatcar's build cache (``docker save | zstd`` + ``.id``) is loaded by each path, the
rerun is a no-op, a truncated tarball and a tarball that is not an image fail with one line on each path, and
``engine_api: sdk`` without a usable SDK is refused in one line."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from kiln_testlib import run_module  # noqa: E402

REGISTRY = "kiln-test.invalid/engine-api"
VERSION = "4593.2.5"
REF = f"{REGISTRY}/flatcar-sdk-amd64:{VERSION}"


def docker(*args, **kw):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False, **kw)


def _need_docker():
    if shutil.which("docker") is None or shutil.which("zstd") is None:
        pytest.skip("docker and zstd are needed (make deps)")
    if docker("info").returncode != 0:
        pytest.skip("the Docker daemon is not running: tests/standin_sdk/dockerd.sh start")
    try:
        import docker as _sdk  # noqa: F401
    except ImportError:
        pytest.skip("the Docker SDK for Python is not installed in the venv: make venv")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A build cache with containers/<ver>/flatcar-sdk-amd64-<ver>.tar.zst and .id of a one-file image."""
    _need_docker()
    root = tmp_path_factory.mktemp("engine-cache")
    docker("rmi", "-f", REF)
    imp = subprocess.run(["docker", "import", "-", REF], input=_rootfs(b"kiln engine api test\n"), capture_output=True, check=False)
    assert imp.returncode == 0, imp.stderr
    image_id = docker("image", "inspect", "--format", "{{.Id}}", REF).stdout.strip()
    d = root / "containers" / VERSION
    d.mkdir(parents=True)
    tar = d / f"flatcar-sdk-amd64-{VERSION}.tar.zst"
    subprocess.run(f"docker save {REF} | zstd -q -o {tar}", shell=True, check=True)
    (d / f"flatcar-sdk-amd64-{VERSION}.id").write_text(image_id + "\n")
    yield {"root": str(root), "tar": tar, "id": image_id}
    docker("rmi", "-f", REF)


def args(cache_root, **extra):
    return dict(sdk_version=VERSION, flavour="amd64", source="cache", sdk_registry=REGISTRY, cache=cache_root, **extra)


@pytest.mark.parametrize("api", ["sdk", "cli"])
def test_load_from_cache_and_rerun(cache, api):
    docker("rmi", "-f", REF)
    res, _run = run_module("kiln.flatcar.sdk_image", args(cache["root"], engine_api=api))
    assert not res.get("failed"), res
    assert res["changed"] and res["engine_api"] == api and res["source"] == "cache"
    assert res["image"]["id"] == cache["id"]
    assert docker("image", "inspect", "--format", "{{.Id}}", REF).stdout.strip() == cache["id"]
    res, _run = run_module("kiln.flatcar.sdk_image", args(cache["root"], engine_api=api))
    assert not res.get("failed") and not res["changed"] and res["source"] == "local", res
    with open(res["log_path"], encoding="utf-8") as fh:
        log = fh.read()
    if api == "sdk":  # the load went through the API: zstd read by the module, no engine CLI
        assert "zstd -dc --" in log and "| (read by the module)" in log


def test_auto_takes_the_sdk_when_the_daemon_answers(cache):
    res, _run = run_module("kiln.flatcar.sdk_image", args(cache["root"]))
    assert not res.get("failed") and res["engine_api"] == "sdk", res


@pytest.mark.parametrize("api", ["sdk", "cli"])
@pytest.mark.parametrize("fault", ["truncated", "not-an-image"])
def test_bad_tarball_fails_in_one_line(cache, tmp_path, api, fault):
    docker("rmi", "-f", REF)
    bad = tmp_path / "containers" / VERSION
    bad.mkdir(parents=True)
    name = f"flatcar-sdk-amd64-{VERSION}"
    blob = cache["tar"].read_bytes()
    if fault == "truncated":
        (bad / f"{name}.tar.zst").write_bytes(blob[: len(blob) // 2])
    else:
        subprocess.run(["zstd", "-q", "-o", str(bad / f"{name}.tar.zst")], input=b"not a tar\n" * 1000, check=True)
    (bad / f"{name}.id").write_text(cache["id"] + "\n")
    res, run = run_module("kiln.flatcar.sdk_image", args(str(tmp_path), engine_api=api))
    assert res.get("failed"), res
    assert "\n" not in res["msg"] and "Traceback" not in run.stdout + run.stderr, res
    assert name in res["msg"] or "inconsistent" in res["msg"], res["msg"]
    assert docker("image", "inspect", REF).returncode != 0


def test_sdk_requested_without_a_docker_daemon_is_refused(cache):
    res, _run = run_module("kiln.flatcar.sdk_image", args(cache["root"], engine_api="sdk"),
                           task_env={"DOCKER_HOST": "unix:///nonexistent/kiln.sock"})
    assert res.get("failed") and "engine_api=sdk" in res["msg"] and "\n" not in res["msg"], res


@pytest.mark.parametrize("api", ["sdk", "cli"])
def test_upstream_tarball_is_tagged_with_the_custom_name(tmp_path, api):
    """A ci-automation tarball holds the upstream name: with sdk_registry it is loaded, then tagged as ours."""
    _need_docker()
    version = "0.0.%d" % (1 if api == "sdk" else 2)
    upstream, ours = f"ghcr.io/flatcar/flatcar-sdk-amd64:{version}", f"{REGISTRY}/flatcar-sdk-amd64:{version}"
    try:
        imp = subprocess.run(["docker", "import", "-", upstream], input=_rootfs(b"kiln upstream-name test\n"), capture_output=True, check=False)
        assert imp.returncode == 0, imp.stderr
        image_id = docker("image", "inspect", "--format", "{{.Id}}", upstream).stdout.strip()
        d = tmp_path / "containers" / version
        d.mkdir(parents=True)
        subprocess.run(f"docker save {upstream} | zstd -q -o {d}/flatcar-sdk-amd64-{version}.tar.zst", shell=True, check=True)
        (d / f"flatcar-sdk-amd64-{version}.id").write_text(image_id + "\n")
        docker("rmi", "-f", upstream, ours)
        res, _run = run_module("kiln.flatcar.sdk_image", dict(args(str(tmp_path), engine_api=api), sdk_version=version))
        assert not res.get("failed") and res["changed"] and res["image"] == {"ref": ours, "id": image_id}, res
        assert docker("image", "inspect", "--format", "{{.Id}}", ours).stdout.strip() == image_id
    finally:
        docker("rmi", "-f", upstream, ours)


def _rootfs(data):
    """A one-file rootfs tarball (kiln.txt holding ``data``) for docker import."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("kiln.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
