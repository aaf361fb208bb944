"""Issue 9: the stand-in SDK behaves like the real flatcar/scripts where kiln depends on it.

* flags are parsed by the real lib/shflags (copied from ../shared/vendor into the generated origin), and every
  stand-in step defines exactly the real DEFINE_* flags (name, type, default);
* setup_board writes PORTAGE_BINHOST like the real one ("--binhost value" + get_board_binhost from
  FLATCAR_DEV_BUILDS), and build_packages regenerates it with ``setup_board --regen_configs`` without --binhost;
* common.sh reads FLATCAR_DEV_BUILDS from version.txt only when FLATCAR_BUILD_ID is not in the environment;
* sudo drops what sdk_lib/90_env_keep does not keep (host-mode wrapper here, the real sudo in the container).
Most tests run the stand-in in host mode; the ones marked with the docker fixture use the SDK container.
"""
from __future__ import annotations

import filecmp
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from kiln_testlib import flatcar_scripts_dir
from standin_sdk import fixture as sdk

TAG = "stable-4593.2.5"
BOARD = "amd64-usr"
MIRROR = "https://mirror.release.flatcar-linux.net"
STEPS = ("setup_board", "build_packages", "build_image", "image_to_vm.sh", "build_sysext", "set_official")
_DEFINE = re.compile(r"^\s*DEFINE_(string|boolean|integer)\s+(\w+)\s+(\"[^\"]*\"|'[^']*'|\S+)", re.M)


@pytest.fixture
def checkout(tmp_path):
    origin = sdk.make_scripts_origin(tmp_path / "origin", tags=[TAG])
    co = tmp_path / "scripts"
    subprocess.run(["git", "clone", "-q", origin, str(co)], check=True)
    sdk.instantiate(co)
    return co


def run(co, *args, env=None, host=True):
    e = {k: v for k, v in os.environ.items() if k not in ("FLATCAR_BUILD_ID", "COREOS_OFFICIAL", "STANDIN_SDK_NO_CONTAINER")}
    if host:
        e["STANDIN_SDK_NO_CONTAINER"] = "1"
    e.update(env or {})
    r = subprocess.run([str(co / "run_sdk_container"), *args], cwd=co, env=e, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=600, check=False)
    r.output = r.stdout + r.stderr
    return r


def binhost(co):
    text = (co / "__build__/standin-sysroot/build" / BOARD / "etc/portage/make.conf").read_text()
    (value,) = re.findall(r'^PORTAGE_BINHOST="([^"]*)"$', text, re.M)
    return value


def set_dev_builds(co, url):
    vfile = co / "sdk_container/.repo/manifests/version.txt"
    vfile.write_text(vfile.read_text() + 'FLATCAR_DEV_BUILDS="%s"\n' % url)


def defines(path):
    text = Path(path).read_text()
    if "release_util.sh" in text:
        text += (Path(path).parent / "build_library" / "release_util.sh").read_text()
    out = {}
    for kind, name, default in _DEFINE.findall(text):
        default = default.strip("\"'")
        default = re.sub(r"\$\{(\w+):-\}", r"${\1}", default)  # "${X:-}" is "${X}" without set -u
        default = re.sub(r"\$(\w+)", r"${\1}", default)  # $X is ${X}
        out[name] = (kind, default)
    return out


# ------------------------------------------------------------------ flags --

@pytest.mark.parametrize("step", STEPS)
def test_flag_definitions_are_the_real_ones(step):
    real = flatcar_scripts_dir()
    if not real:
        sdk.vendor_scripts()  # skips with the one-line reason
    assert defines(sdk.SCRIPTS_SRC / step) == defines(Path(real) / step)


def test_origin_has_the_real_shflags_and_no_private_parser(checkout):
    real = Path(flatcar_scripts_dir())
    assert filecmp.cmp(checkout / "lib/shflags/shflags", real / "lib/shflags/shflags", shallow=False)
    assert filecmp.cmp(checkout / "sdk_lib/90_env_keep", real / "sdk_lib/90_env_keep", shallow=False)
    assert not (sdk.SCRIPTS_SRC / "lib").exists()  # nothing of flatcar/scripts is committed to kiln
    r = run(checkout, "-U", "./set_official", "--board=amd64-usr", "--offical")
    assert r.returncode == 1
    assert "flags:WARN getopt: unrecognized option '--offical'" in r.output
    assert "flags:FATAL unable to parse provided options with getopt." in r.output


# --------------------------------------------------------------- binhost --

def test_setup_board_binhost_is_one_string_last_wins(checkout):
    r = run(checkout, "-U", "./setup_board", "--board=amd64-usr", "--binhost=http://a.invalid/x", "--binhost=http://b.invalid/y")
    assert r.returncode == 0, r.output
    assert binhost(checkout) == "http://b.invalid/y %s/boards/amd64-usr/4593.2.5/pkgs/" % MIRROR
    # build_packages regenerates make.conf itself (setup_board --regen_configs, no --binhost): the extra host is gone
    r = run(checkout, "-U", "./build_packages", "--board=amd64-usr", env={"FLATCAR_BUILD_ID": "kiln-1"})
    assert r.returncode == 0, r.output
    assert binhost(checkout) == " %s/boards/amd64-usr/4593.2.5/pkgs/" % MIRROR


def test_flatcar_dev_builds_from_versionfile_only_without_build_id_in_env(checkout):
    set_dev_builds(checkout, "http://cache.invalid/kiln")
    # FLATCAR_BUILD_ID in the environment: common.sh loads only FLATCAR_VERSION_ID and FLATCAR_SDK_VERSION
    r = run(checkout, "-U", "./build_packages", "--board=amd64-usr", env={"FLATCAR_BUILD_ID": "kiln-1"})
    assert r.returncode == 0, r.output
    assert binhost(checkout) == " %s/boards/amd64-usr/4593.2.5/pkgs/" % MIRROR
    # left to version.txt: the cache is the binhost; --getbinpkgver picks the version directory
    r = run(checkout, "-U", "./build_packages", "--board=amd64-usr")
    assert r.returncode == 0, r.output
    assert binhost(checkout) == " http://cache.invalid/kiln/boards/amd64-usr/4593.2.5/pkgs/"
    r = run(checkout, "-U", "./build_packages", "--board=amd64-usr", "--getbinpkgver=4593.2.5+kiln-1")
    assert r.returncode == 0, r.output
    assert binhost(checkout) == " http://cache.invalid/kiln/boards/amd64-usr/4593.2.5+kiln-1/pkgs/"


# ------------------------------------------------------------------ sudo --

SUDO_ENV = {"USE": "kiln-use", "SYSEXT_SIGNING_KEY_DIR": "/kiln/keys", "FLATCAR_BUILD_ID": "kiln-1"}


def check_sudo(co, *pre, host=True):
    r = run(co, *pre, "-U", "sudo", "env", env=SUDO_ENV, host=host)
    assert r.returncode == 0, r.output
    assert "USE=kiln-use" in r.stdout and "FLATCAR_BUILD_ID=kiln-1" in r.stdout  # in 90_env_keep
    assert "SYSEXT_SIGNING_KEY_DIR" not in r.stdout  # not in 90_env_keep: dropped
    r = run(co, *pre, "-U", "sudo", "-E", "env", env=SUDO_ENV, host=host)
    assert r.returncode == 0, r.output
    assert "SYSEXT_SIGNING_KEY_DIR=/kiln/keys" in r.stdout


def test_host_mode_sudo_keeps_only_env_keep(checkout):
    check_sudo(checkout)


def test_container_sudo_keeps_only_env_keep(checkout):
    if not sdk.dockerd_start():
        pytest.skip("dockerd cannot run on this machine")
    image = sdk.ensure_sdk_image("all", "4593.2.5")
    name = "kiln-standin-sudo-%s" % uuid.uuid4().hex[:8]
    try:
        check_sudo(checkout, "-n", name, "-C", image, host=False)  # the real sudo with /etc/sudoers.d/90_env_keep
    finally:
        sdk.remove_containers(name)
