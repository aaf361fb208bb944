"""Contract tests for the stand-in Flatcar SDK fixture (tests/standin_sdk).

They prove that the stand-in honours the real flatcar/scripts CLI contract
that kiln's product code relies on.  Tests marked `docker` need a working
dockerd (started with tests/standin_sdk/dockerd.sh); the rest run the
stand-in in host mode (STANDIN_SDK_NO_CONTAINER=1).
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from standin_sdk import fixture as sdk

SDK_VERSION = "4593.2.5"
TAG = "stable-4593.2.5"


def run(checkout, *args, env=None, host=False, check=False, custom=True):
    """run_sdk_container; in container mode with ``-C <stand-in image>`` (custom=True), as kiln passes it
    for sdk_registry kiln-standin.invalid: the stand-in image never carries the real ghcr.io name."""
    if custom and not host:
        args = ("-C", sdk.sdk_image_name("all", SDK_VERSION)) + args
    e = dict(os.environ)
    for k in ("FLATCAR_BUILD_ID", "COREOS_OFFICIAL", "STANDIN_FAIL_STEP", "STANDIN_STEP_SLEEP",
              "STANDIN_SDK_NO_CONTAINER"):
        e.pop(k, None)
    if host:
        e["STANDIN_SDK_NO_CONTAINER"] = "1"
    e.update(env or {})
    r = subprocess.run([str(Path(checkout) / "run_sdk_container"), *args], cwd=checkout, env=e,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False)
    r.output = r.stdout + r.stderr
    if check and r.returncode != 0:
        raise AssertionError(f"rc={r.returncode}\n{r.output[-4000:]}")
    return r


@pytest.fixture
def checkout(tmp_path):
    origin = sdk.make_scripts_origin(tmp_path / "origin", tags=[TAG])
    co = tmp_path / "scripts"
    subprocess.run(["git", "clone", "-q", origin, str(co)], check=True)
    sdk.instantiate(co)
    return co


@pytest.fixture(scope="module")
def docker_sdk():
    if not sdk.dockerd_start():
        pytest.skip("dockerd cannot run on this machine")
    try:
        return sdk.ensure_sdk_image("all", SDK_VERSION)
    except subprocess.CalledProcessError as exc:  # e.g. no Debian mirror
        pytest.skip(f"cannot build stand-in SDK image: {exc.stderr[-500:]}")


@pytest.fixture
def cname(docker_sdk):
    name = f"kiln-standin-test-{uuid.uuid4().hex[:8]}"
    yield name
    sdk.remove_containers(name)


def versionfile(co):
    return (Path(co) / "sdk_container/.repo/manifests/version.txt").read_text()


def build_dirs(co, board="amd64-usr"):
    d = Path(co) / "__build__/images/images" / board
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink())


def digests(d: Path):
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_symlink():
            out[str(p.relative_to(d))] = "-> " + os.readlink(p)
    return out


# ------------------------------------------------------------ CLI contract --

def test_unknown_flag_fails_like_shflags(checkout):
    r = run(checkout, "-U", "./build_image", "--board=amd64-usr", "--bogus", "prod", host=True)
    assert r.returncode == 1
    assert "flags:WARN getopt: unrecognized option '--bogus'" in r.output
    assert "flags:FATAL unable to parse provided options with getopt." in r.output


@pytest.mark.parametrize("script,flags", [
    ("./setup_board", ["--board=amd64-usr", "--nogetbinpkg", "--regen_configs_only", "--getbinpkgver=current"]),
    ("./build_packages", ["--board=amd64-usr", "--nousepkg", "--nogetbinpkg", "--noworkon", "--fetchonly"]),
    ("./set_official", ["--board=amd64-usr", "--noofficial"]),
])
def test_known_flags_parse(checkout, script, flags):
    r = run(checkout, "-U", script, *flags, host=True)
    assert "flags:FATAL" not in r.output, r.output


def test_run_sdk_container_unknown_flag(checkout):
    r = run(checkout, "--bogus", host=True)
    assert r.returncode == 1
    assert "Unknown flag '--bogus', use '-h' or '--help' for usage" in r.output


def test_format_qemu_is_rejected(checkout):
    r = run(checkout, "-U", "./image_to_vm.sh", "--board=amd64-usr", "--format=qemu", host=True)
    assert r.returncode == 1
    assert "image_to_vm.sh: Invalid format: qemu" in r.output


def test_U_keeps_versionfile(checkout):
    vf = Path(checkout) / "sdk_container/.repo/manifests/version.txt"
    custom = ('FLATCAR_VERSION=4593.2.5+kiln-7\nFLATCAR_VERSION_ID=4593.2.5\n'
              'FLATCAR_BUILD_ID="kiln-7"\nFLATCAR_SDK_VERSION=4593.2.5\n')
    vf.write_text(custom)
    run(checkout, "-U", "true", host=True, check=True)
    assert vf.read_text() == custom


def test_default_rewrites_versionfile_from_git_describe(checkout):
    sha = sdk.add_commit(checkout, "local change")
    vf = Path(checkout) / "sdk_container/.repo/manifests/version.txt"
    vf.write_text("FLATCAR_VERSION=0.0.0\nFLATCAR_VERSION_ID=0.0.0\nFLATCAR_BUILD_ID=\"\"\nFLATCAR_SDK_VERSION=4593.2.5\n")
    r = run(checkout, "true", host=True, check=True)
    assert "Writing versionfile" in r.output
    build_id = f"1-g{sha[:7]}"
    text = vf.read_text()
    assert f"FLATCAR_VERSION=4593.2.5+{build_id}\n" in text
    assert f'FLATCAR_BUILD_ID="{build_id}"\n' in text
    assert "FLATCAR_SDK_VERSION=4593.2.5\n" in text


def test_tag_at_head_gives_official_versionfile(checkout):
    run(checkout, "true", host=True, check=True)
    assert versionfile(checkout) == sdk.versionfile_text(TAG)


def test_sdkenv_passthrough_is_the_real_list(checkout):
    r = run(checkout, "-U", "env", host=True, check=True,
            env={"FLATCAR_BUILD_ID": "kiln-3", "COREOS_OFFICIAL": "0", "KILN_NOT_PASSED": "x",
                 "FLATCAR_DEV_BUILDS": "http://nope"})
    sdkenv = (Path(checkout) / "sdk_container/.sdkenv").read_text()
    assert 'FLATCAR_BUILD_ID="kiln-3"' in sdkenv
    assert 'COREOS_OFFICIAL="0"' in sdkenv
    assert "KILN_NOT_PASSED" not in sdkenv and "FLATCAR_DEV_BUILDS" not in sdkenv
    assert "FLATCAR_BUILD_ID=kiln-3" in r.stdout
    assert "KILN_NOT_PASSED" not in r.stdout and "FLATCAR_DEV_BUILDS" not in r.stdout


def test_build_image_needs_board_root(checkout):
    r = run(checkout, "-U", "./build_image", "--board=amd64-usr", host=True,
            env={"FLATCAR_BUILD_ID": "kiln-1"})
    assert r.returncode == 1
    assert "/build/amd64-usr/etc/portage/make.conf: No such file or directory" in r.output


def test_image_to_vm_needs_sysext_squashfs(checkout):
    env = {"FLATCAR_BUILD_ID": "kiln-1"}
    run(checkout, "-U", "./build_packages", "--board=amd64-usr", host=True, env=env, check=True)
    run(checkout, "-U", "./build_image", "--board=amd64-usr", "prod", host=True, env=env, check=True)
    (d,) = build_dirs(checkout)
    (d / "flatcar_production_image_sysext.squashfs").unlink()
    r = run(checkout, "-U", "./image_to_vm.sh", "--board=amd64-usr",
            "--from=../build/images/amd64-usr/latest", host=True, env=env)
    assert r.returncode == 1
    assert "Sysext base image does not exist:" in r.output


def test_oem_sysext_required_for_qemu_uefi(checkout):
    env = {"FLATCAR_BUILD_ID": "kiln-1"}
    run(checkout, "-U", "./build_packages", "--board=amd64-usr", host=True, env=env, check=True)
    run(checkout, "-U", "./build_image", "--board=amd64-usr", "prod", host=True, env=env, check=True)
    r = run(checkout, "-U", "./image_to_vm.sh", "--board=amd64-usr", "--format=qemu_uefi", host=True, env=env)
    assert r.returncode == 1
    assert "Run 'build_image oem_sysext' first." in r.output


def test_empty_build_id_gets_date_default(checkout):
    """The real SDK's gotcha: an empty FLATCAR_BUILD_ID becomes a date."""
    run(checkout, "-U", "./build_packages", "--board=amd64-usr", host=True, check=True)
    run(checkout, "-U", "./build_image", "--board=amd64-usr", "prod", host=True, check=True)
    (d,) = build_dirs(checkout)
    assert re.fullmatch(r"developer-4593\.2\.5\+\d{4}-\d\d-\d\d-\d{4}-a1", d.name), d.name


def test_official_pinned_build(checkout):
    env = {"COREOS_OFFICIAL": "1", "FLATCAR_BUILD_ID": ""}
    (Path(checkout) / "sdk_container/.repo/manifests/version.txt").write_text(sdk.versionfile_text(TAG))
    run(checkout, "-U", "./build_packages", "--board=amd64-usr", host=True, env=env, check=True)
    run(checkout, "-U", "./build_image", "--board=amd64-usr", "--group=stable", "prod", host=True, env=env, check=True)
    (d,) = build_dirs(checkout)
    assert d.name == "stable-4593.2.5-a1"
    assert not (d / "flatcar_test_update.gz").exists()
    assert not (d / "flatcar_production_image.vmlinuz").exists()


def test_existing_build_dir_needs_replace(checkout):
    env = {"FLATCAR_BUILD_ID": "kiln-1"}
    run(checkout, "-U", "./build_packages", "--board=amd64-usr", host=True, env=env, check=True)
    run(checkout, "-U", "./build_image", "--board=amd64-usr", "prod", host=True, env=env, check=True)
    r = run(checkout, "-U", "./build_image", "--board=amd64-usr", "prod", host=True, env=env)
    assert r.returncode == 1 and "Unwilling to overwrite" in r.output
    run(checkout, "-U", "./build_image", "--board=amd64-usr", "--replace", "prod", host=True, env=env, check=True)
    run(checkout, "-U", "./build_image", "--board=amd64-usr", "--build_attempt=2", "prod", host=True, env=env, check=True)
    assert [p.name for p in build_dirs(checkout)] == ["developer-4593.2.5+kiln-1-a1", "developer-4593.2.5+kiln-1-a2"]


@pytest.mark.parametrize("how", ["file", "env"])
def test_failure_switch(checkout, how):
    env = {"FLATCAR_BUILD_ID": "kiln-1"}
    run(checkout, "-U", "./build_packages", "--board=amd64-usr", host=True, env=env, check=True)
    if how == "file":
        sdk.set_fail(checkout, "build_image")
    else:
        env["STANDIN_FAIL_STEP"] = "build_image"
    r = run(checkout, "-U", "./build_image", "--board=amd64-usr", host=True, env=env)
    assert r.returncode == 1
    assert "stand-in: injected failure in build_image" in r.output
    partial = Path(checkout) / "__build__/images/images/amd64-usr/developer-4593.2.5+kiln-1-a1/flatcar_production_image.bin"
    assert partial.read_text().startswith("partial output of build_image")
    assert not (partial.parent.parent / "latest").exists()


def test_host_mode_flow_and_sysext(checkout):
    env = {"FLATCAR_BUILD_ID": "kiln-1"}
    run(checkout, "-U", "./build_packages", "--board=amd64-usr", host=True, env=env, check=True)
    run(checkout, "-U", "./build_image", "--board=amd64-usr", host=True, env=env, check=True)
    run(checkout, "-U", "./image_to_vm.sh", "--board=amd64-usr", "--format=openstack",
        "--from=/mnt/host/source/src/build/images/amd64-usr/latest",
        "--image_compression_formats=gz,bz2,none", host=True, env=env, check=True)
    run(checkout, "-U", "./build_sysext", "--board=amd64-usr",
        "--image_builddir=/mnt/host/source/src/build/images/amd64-usr/latest/mysx",
        "mysx", "app-containers/docker", host=True, env=env, check=True)
    (d,) = build_dirs(checkout)
    for f in ("flatcar_production_openstack_image.img", "flatcar_production_openstack_image.img.gz",
              "flatcar_production_openstack_image.img.bz2", "mysx/mysx.raw"):
        assert (d / f).is_file(), f
    # like the real build_sysext: the binary packages of docker and of what the image lacks (containerd),
    # listed as equery prints them; a package with no binary package is refused like emerge --usepkgonly
    pkgs = (d / "mysx/mysx_packages.txt").read_text().split()
    assert [re.sub(r"-[0-9].*", "", p) for p in pkgs] == ["app-containers/containerd", "app-containers/docker"], pkgs
    assert all(p.endswith("::portage-stable") for p in pkgs), pkgs
    r = run(checkout, "-U", "./build_sysext", "--board=amd64-usr",
            "--image_builddir=/mnt/host/source/src/build/images/amd64-usr/latest/mysx2",
            "mysx2", "app-misc/foo", host=True, env=env)
    assert r.returncode == 1 and 'emerge: there are no binary packages to satisfy "app-misc/foo".' in r.output, r.output


# ---------------------------------------------------------- docker / flow --

EXPECTED_BUILD_IMAGE = [
    "flatcar_production_image.bin", "flatcar_production_image.bin.bz2",
    "flatcar_production_image.vmlinuz", "flatcar_production_image_sysext.squashfs",
    "flatcar_production_image_packages.txt", "flatcar_production_image_contents.txt",
    "flatcar_production_image_verity.txt", "flatcar_production_update.bin",
    "flatcar_production_update.zip", "flatcar_test_update.gz", "version.txt",
    "flatcar-container.tar.gz", "flatcar_developer_container.bin.bz2",
    "flatcar-podman.raw", "flatcar-python.raw", "oem-qemu.raw", "oem-azure.raw",
]
EXPECTED_VM = [
    "flatcar_production_qemu_uefi_image.img", "flatcar_production_qemu_uefi_efi_code.qcow2",
    "flatcar_production_qemu_uefi_efi_vars.qcow2", "flatcar_production_qemu_uefi.sh",
    "flatcar_production_qemu.sh", "flatcar_production_qemu_uefi_image.img.bz2",
]


def full_flow(co, name, build_id="kiln-1"):
    env = {"FLATCAR_BUILD_ID": build_id}
    run(co, "-n", name, "-U", "./build_packages", "--board=amd64-usr", env=env, check=True)
    run(co, "-n", name, "-U", "./build_image", "--board=amd64-usr",
        "prodtar", "container", "sysext", "oem_sysext", env=env, check=True)
    run(co, "-n", name, "-U", "./image_to_vm.sh", "--board=amd64-usr", "--format=qemu_uefi",
        "--from=../build/images/amd64-usr/latest", "--image_compression_formats=bz2,none",
        env=env, check=True)
    (d,) = build_dirs(co)
    return d


def test_container_reused_by_name(checkout, cname, docker_sdk):
    assert docker_sdk.startswith("kiln-standin.invalid/flatcar-sdk-all:")  # never the real SDK's name
    run(checkout, "-n", cname, "-U", "true", check=True)
    first = sdk.container_id(cname)
    assert first
    image = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", cname],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert image == docker_sdk  # -C: the custom image, as the real run_sdk_container
    r = run(checkout, "-n", cname, "-U", "true", check=True)
    assert "Creating a new container" not in r.output
    assert sdk.container_id(cname) == first
    insp = subprocess.run(["docker", "inspect", "--format",
                           "{{.HostConfig.NetworkMode}} {{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}",
                           cname], capture_output=True, text=True, check=True).stdout
    assert insp.startswith("none ")
    assert f"{checkout}:/mnt/host/source/src/scripts" in insp
    assert f"{checkout}/__build__/images:/mnt/host/source/src/build" in insp


def test_default_container_name_cleanup_script_and_rm(checkout, docker_sdk):
    # like the real script: the OS part is the raw git version (the tag)
    name = "flatcar-sdk-all-4593.2.5_os-stable-4593.2.5"
    sdk.remove_containers(name)
    try:
        cleanup = Path(checkout) / "ci-cleanup.sh"
        r = run(checkout, "-x", str(cleanup), "--rm", "true", check=True)
        assert f"Creating a new container '{name}'" in r.output
        assert cleanup.read_text() == f"'docker' container rm -f '{name}'\n"
        assert sdk.container_id(name) is None  # --rm removed it
    finally:
        sdk.remove_containers(name)


def test_missing_image_fails_without_pull(checkout, cname):
    r = run(checkout, "-n", cname, "-U", "-V", "1.2.3", "true", custom=False)
    assert r.returncode == 1
    assert "ghcr.io/flatcar/flatcar-sdk-all:1.2.3" in r.output and "not available locally" in r.output


def test_without_custom_image_the_real_name_is_used(checkout, cname):
    # no -C: like the real script, ghcr.io/flatcar/flatcar-sdk-<arch>:<version>, which no stand-in carries
    r = run(checkout, "-n", cname, "-U", "true", custom=False)
    assert r.returncode == 1
    assert f"ghcr.io/flatcar/flatcar-sdk-all:{SDK_VERSION}" in r.output and "not available locally" in r.output
    r = run(checkout, "-n", cname, "-U", "-C", "kiln-standin.invalid/flatcar-sdk-all:1.2.3", "true", custom=False)
    assert r.returncode == 1 and "kiln-standin.invalid/flatcar-sdk-all:1.2.3" in r.output


def test_full_flow_produces_named_artifacts(checkout, cname):
    d = full_flow(checkout, cname)
    assert d.name == "developer-4593.2.5+kiln-1-a1"
    for f in EXPECTED_BUILD_IMAGE + EXPECTED_VM:
        assert (d / f).exists(), f
    base = d.parent
    assert os.readlink(base / "latest") == d.name
    assert os.readlink(base / "developer-latest") == d.name
    vt = (d / "version.txt").read_text()
    assert 'FLATCAR_BUILD_ID="kiln-1"' in vt and "FLATCAR_VERSION=4593.2.5+kiln-1" in vt
    # the binhost lives inside the container (/build is not bind-mounted);
    # the container is stopped between calls, so go through run_sdk_container
    out = run(checkout, "-n", cname, "-U", "sh", "-c",
              "cat /build/amd64-usr/var/lib/portage/pkgs/Packages; "
              "ls /build/amd64-usr/var/lib/portage/pkgs/*/", check=True).stdout
    assert "CPV: app-containers/docker-" in out and ".gpkg.tar" in out
    qinfo = subprocess.run(["qemu-img", "info", str(d / "flatcar_production_qemu_uefi_image.img")],
                           capture_output=True, text=True, check=True).stdout
    assert "file format: qcow2" in qinfo
    # OEM sysexts as create_oem_sysexts builds them: build_sysext --metapkgs=coreos-base/oem-<id> from the binary
    # package build_packages made, the package's files and version in the sysext
    assert (d / "oem-azure_packages.txt").read_text().split() == ["coreos-base/oem-azure-2.12.0.4-r2::coreos-overlay"]
    azure = sdk.erofs_files(d / "oem-azure.raw", d.parent / "x-azure")
    assert (azure / "usr/share/oem-azure/chrony.conf").read_text().startswith("# stand-in chrony.conf")
    release = (azure / "usr/lib/extension-release.d/extension-release.oem-azure").read_text().splitlines()
    assert "SYSEXT_ID=oem-azure" in release and "SYSEXT_VERSION_ID=2.12.0.4-r2" in release


def test_outputs_are_deterministic(tmp_path, docker_sdk):
    results = []
    names = []
    try:
        for i in range(2):
            origin = sdk.make_scripts_origin(tmp_path / f"origin{i}", tags=[TAG])
            co = tmp_path / f"scripts{i}"
            subprocess.run(["git", "clone", "-q", origin, str(co)], check=True)
            sdk.instantiate(co)
            name = f"kiln-standin-det-{uuid.uuid4().hex[:8]}"
            names.append(name)
            results.append(digests(full_flow(co, name)))
    finally:
        for n in names:
            sdk.remove_containers(n)
    assert results[0] == results[1]


def test_failure_switch_in_container(checkout, cname):
    env = {"FLATCAR_BUILD_ID": "kiln-1", "STANDIN_FAIL_STEP": "build_packages"}
    r = run(checkout, "-n", cname, "-U", "./build_packages", "--board=amd64-usr", env=env)
    assert r.returncode == 1
    assert "injected failure in build_packages" in r.output


def test_build_sdk_image_save(tmp_path, docker_sdk):
    sdk.ensure_sdk_image("all", SDK_VERSION, save_dir=tmp_path)
    d = tmp_path / "containers" / SDK_VERSION
    tarball = d / f"flatcar-sdk-all-{SDK_VERSION}.tar.zst"
    idf = d / f"flatcar-sdk-all-{SDK_VERSION}.id"
    assert tarball.stat().st_size > 1_000_000
    image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", docker_sdk],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert idf.read_text().strip() == image_id.removeprefix("sha256:")
    # the image inside the ci-automation layout carries the stand-in name, never ghcr.io/flatcar
    manifest = subprocess.run(["bash", "-c", 'zstd -dc -- "$1" | tar -xO manifest.json', "x", str(tarball)],
                              capture_output=True, text=True, check=True).stdout
    assert docker_sdk in manifest and "ghcr.io" not in manifest
    listed = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}", "ghcr.io/flatcar/flatcar-sdk-*"],
                            capture_output=True, text=True, check=True).stdout.split()
    for repo in listed:  # a real SDK image may be there; a stand-in (our label) may not
        label = subprocess.run(["docker", "image", "inspect", "--format", '{{index .Config.Labels "org.kiln.standin-sdk.hash"}}',
                                repo + ":" + SDK_VERSION], capture_output=True, text=True, check=False).stdout.strip()
        assert label in ("", "<no value>"), f"stand-in image tagged {repo}"
