"""Issue 9: every argv kiln can hand to the SDK is accepted by the SDK contract.

The argv builders (plugins/module_utils/_sdkargv.py) are called for every optional branch of every
SDK module (each option set and unset, booleans both ways, each image type, each VM format kiln
accepts, each compression choice); each result, wrapped in run_sdk_container like the modules do, must
name only flags the target script defines with the right type (--x/--nox for booleans, --x=v for
values), image types and VM formats the scripts accept and environment variables that reach the
container, for every committed release line (tests/sdk_contract/*.json). The modules' documented
choices must be subsets of the contract. Also: defect 4 (developer_data translated into the
container) and defect 6 (a build without prod reuses the newest attempt directory).
"""

from __future__ import annotations

import glob
import itertools
import json
import os

import pytest
import yaml

from kiln_testlib import REPO

from ansible_collections.kiln.flatcar.plugins.module_utils import _contract as c
from ansible_collections.kiln.flatcar.plugins.module_utils import _sdkargv as a
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import SDK_ENV_PASSTHROUGH

BOARDS = ("amd64-usr", "arm64-usr")
OUT = a.CONTAINER_ROOT + "/images"
BUILD = a.CONTAINER_ROOT + "/images/amd64-usr/developer-1.2.3-a1"


def _lines():
    found = []
    for path in sorted(glob.glob(os.path.join(REPO, "tests", "sdk_contract", "*.json"))):
        with open(path, encoding="utf-8") as fh:
            found.append(pytest.param(c.ContractData(json.load(fh)), id=os.path.basename(path)[:-5]))
    assert found, "no committed SDK contract under tests/sdk_contract"
    return found


LINES = _lines()


def wrap(argv):
    return a.sdk_command("flatcar-sdk-all-1.2.3_os-1.2.3", "all", "1.2.3", argv)


def assert_accepted(contract, argvs):
    argvs = list(argvs)
    assert argvs
    for argv in argvs:
        assert c.command_problems(contract, wrap(argv)) == [], argv


def toggles(names, base):
    """base, then each boolean flipped on its own."""
    yield dict(base)
    for name in names:
        yield dict(base, **{name: not base[name]})


# -- packages -------------------------------------------------------------------------------------
PACKAGES_BASE = dict(usepkg=True, usepkgonly=False, getbinpkg=True, getbinpkgver=None, skip_toolchain_update=False,
                     skip_chroot_upgrade=False, only_resolve_circular_deps=False, fetchonly=False, rebuild=False, packages=[])


def packages_params():
    yield from toggles(a.PACKAGES_BOOLS, PACKAGES_BASE)
    for bools in itertools.product([True, False], repeat=len(a.PACKAGES_BOOLS)):
        yield dict(PACKAGES_BASE, **dict(zip(a.PACKAGES_BOOLS, bools)))
    yield dict(PACKAGES_BASE, getbinpkgver="4593.2.5")
    yield dict(PACKAGES_BASE, getbinpkgver="4593.2.5 4593.2.4")  # what packages.py derives from two binhosts
    yield dict(PACKAGES_BASE, packages=["app-misc/jq", "--looks-like-a-flag"])


@pytest.mark.parametrize("contract", LINES)
def test_packages_argv(contract):
    argvs = [a.build_packages_argv(p, b) for p in packages_params() for b in BOARDS]
    assert_accepted(contract, argvs)


def test_packages_argv_shape():
    argv = a.build_packages_argv(dict(PACKAGES_BASE, getbinpkgver="4593.2.5", packages=["--evil"]), "amd64-usr")
    assert argv == ["./build_packages", "--board=amd64-usr", "--usepkg", "--nousepkgonly", "--getbinpkg", "--noskip_toolchain_update",
                    "--noskip_chroot_upgrade", "--noonly_resolve_circular_deps", "--nofetchonly", "--norebuild",
                    "--getbinpkgver=4593.2.5", "--", "--evil"]
    assert a.build_packages_argv(PACKAGES_BASE, "amd64-usr")[-1] == "--norebuild"  # no stray "--" without packages


# -- image ----------------------------------------------------------------------------------------
IMAGE_BASE = dict(image_types=["prod", "oem_sysext"], group="developer", base_pkg=None, base_dev_pkg=None, base_sysexts=None,
                  oem_sysexts=None, disk_layout=None, compression_formats=["bz2"], only_store_compressed=True,
                  enable_rootfs_verification=True, extract_update=True, generate_update=True, getbinpkg=False, getbinpkgver=None,
                  developer_data=None, devcontainer_binhost=None, replace=False)


def image_params():
    yield from toggles(a.IMAGE_BOOLS + ("replace",), IMAGE_BASE)
    for name in a.IMAGE_STRINGS:
        yield dict(IMAGE_BASE, **{name: "value-of-" + name})
    for kind in a.IMAGE_TYPES:
        yield dict(IMAGE_BASE, image_types=[kind])
    yield dict(IMAGE_BASE, image_types=list(a.IMAGE_TYPES))
    for comp in a.COMPRESSION_CHOICES:
        yield dict(IMAGE_BASE, compression_formats=[comp])
    yield dict(IMAGE_BASE, compression_formats=list(a.COMPRESSION_CHOICES))


@pytest.mark.parametrize("contract", LINES)
def test_image_argv(contract):
    argvs = []
    for p in image_params():
        for dev in (None, a.CONTAINER_SCRIPTS + "/cloud-config.yaml"):
            argvs.append(a.build_image_argv(p, "amd64-usr", 3, OUT, dev))
    argvs += [a.set_official_argv(b, official) for b in BOARDS for official in (True, False)]
    assert_accepted(contract, argvs)


def test_image_argv_shape():
    p = dict(IMAGE_BASE, base_sysexts="a|b/c", replace=True)
    argv = a.build_image_argv(p, "arm64-usr", 2, OUT, a.CONTAINER_SCRIPTS + "/dev.yaml")
    assert argv[0] == "./build_image" and argv[-2:] == ["prod", "oem_sysext"]
    assert {"--board=arm64-usr", "--group=developer", "--base_sysexts=a|b/c", "--build_attempt=2", "--output_root=" + OUT, "--replace",
            "--developer_data=/mnt/host/source/src/scripts/dev.yaml", "--nogetbinpkg"} <= set(argv)
    assert a.set_official_argv("amd64-usr", False) == ["./set_official", "--board=amd64-usr", "--noofficial"]


def test_developer_data_is_translated_into_the_container(tmp_path):
    """Defect 4: the host path never reaches build_image; paths run_sdk_container does not mount are refused."""
    scripts = tmp_path / "scripts"
    (scripts / "__build__" / "images").mkdir(parents=True)
    assert a.container_path(str(scripts / "cloud.yaml"), str(scripts)) == "/mnt/host/source/src/scripts/cloud.yaml"
    assert a.container_path(str(scripts / "__build__" / "images" / "x" / "c.yaml"), str(scripts)) == "/mnt/host/source/src/build/x/c.yaml"
    assert a.container_path(str(scripts / "__build__" / "images"), str(scripts)) == a.CONTAINER_ROOT
    assert a.container_path(str(tmp_path / "elsewhere.yaml"), str(scripts)) is None
    assert a.container_path(str(scripts) + "-other/cloud.yaml", str(scripts)) is None
    assert a.container_path(str(scripts / ".." / "x.yaml"), str(scripts)) is None
    flags = a.build_image_flags(dict(IMAGE_BASE, developer_data=str(scripts / "cloud.yaml")), "amd64-usr",
                                a.container_path(str(scripts / "cloud.yaml"), str(scripts)))
    assert "--developer_data=/mnt/host/source/src/scripts/cloud.yaml" in flags
    assert not any(str(tmp_path) in f for f in flags)


@pytest.mark.parametrize("existing,types,replace,expect", [
    ([], ["prod"], False, 1),
    ([], ["sysext"], False, 1),
    ([1], ["prod", "oem_sysext"], False, 2),
    ([1, 2], ["prodtar"], False, 3),
    ([1, 2], ["prod"], True, 2),
    # defect 6: no prod, no new attempt: build_image only refuses an existing dir when PROD_IMAGE=1
    ([1], ["sysext"], False, 1),
    ([1, 3, 2], ["oem_sysext"], False, 3),
    ([1, 2], ["container", "sysext", "oem_sysext"], False, 2),
    ([4], ["sysext"], True, 4),
])
def test_build_image_attempt(existing, types, replace, expect):
    assert a.build_image_attempt(existing, types, replace) == expect


def test_vendor_refuses_an_existing_dir_only_for_prod():
    """The rule build_image_attempt follows, read from the real build_image (skips without vendor)."""
    from kiln_testlib import VENDOR_SKIP, flatcar_scripts_dir
    vendor = flatcar_scripts_dir()
    if not vendor:
        pytest.skip(VENDOR_SKIP)
    with open(os.path.join(vendor, "build_image"), encoding="utf-8") as fh:
        text = fh.read()
    assert 'if [[ -e "${BUILD_DIR}" ]] && [[ "${PROD_IMAGE}" = 1 ]]; then' in text
    assert "prodtar) PROD_IMAGE=1 PROD_TAR=1 ;;" in text and "    prod) PROD_IMAGE=1 ;;" in text


# -- vm_image -------------------------------------------------------------------------------------
VM_BASE = dict(only_store_compressed=True, disk_layout=None, mem=None)


def vm_formats():
    formats = list(a.VM_FORMATS)
    for alias in a.VM_ALIASES:
        expanded, error = a.expand_vm_formats([alias])
        assert error is None
        formats += expanded
    return sorted(set(formats))


@pytest.mark.parametrize("contract", LINES)
def test_vm_image_argv(contract):
    argvs = []
    for fmt in vm_formats():
        for p in (VM_BASE, dict(VM_BASE, only_store_compressed=False), dict(VM_BASE, disk_layout="base"), dict(VM_BASE, mem="4096")):
            for b in BOARDS:
                argvs.append(a.image_to_vm_argv(p, b, fmt, BUILD, a.vm_compression(fmt)))
    for comp in a.COMPRESSION_CHOICES:
        argvs.append(a.image_to_vm_argv(VM_BASE, "amd64-usr", "qemu_uefi", BUILD, a.vm_compression("qemu_uefi", {"qemu_uefi": [comp]})))
    assert_accepted(contract, argvs)


def test_vm_format_errors():
    assert a.expand_vm_formats(["qemu"])[1].startswith("format qemu is not valid any more")
    assert a.expand_vm_formats(["floppy"])[1].startswith("unknown VM image format 'floppy'")
    assert a.expand_vm_formats(["vmware", "ami", "aws"])[0] == ["vmware", "vmware_ova", "vmware_raw", "ami", "ami_vmdk"]


# -- sysext ---------------------------------------------------------------------------------------
SYSEXT_BASE = dict(name="htop", packages=["sys-process/htop"], metapkgs=None, compression="lz4hc", strip_binaries=False,
                   generate_pkginfo=False, manglefs_script=None, ignore_version_mismatch=False)


def sysext_params():
    yield from toggles(("strip_binaries", "generate_pkginfo", "ignore_version_mismatch"), SYSEXT_BASE)
    for comp in a.SYSEXT_COMPRESSION:
        yield dict(SYSEXT_BASE, compression=comp)
    yield dict(SYSEXT_BASE, metapkgs="coreos-base/oem-azure", packages=[])
    yield dict(SYSEXT_BASE, manglefs_script="sdk_container/src/mangle.sh")


@pytest.mark.parametrize("contract", LINES)
def test_sysext_argv(contract):
    argvs = [["sudo"] + a.build_sysext_argv(p, b, BUILD + "/flatcar_production_image_sysext.squashfs", BUILD)
             for p in sysext_params() for b in BOARDS]
    assert_accepted(contract, argvs)


def test_sysext_argv_puts_user_words_after_double_dash():
    argv = a.build_sysext_argv(dict(SYSEXT_BASE, packages=["--evil"]), "amd64-usr", "/b", "/o")
    assert argv[-3:] == ["--", "htop", "--evil"]


# -- run_sdk_container and the environment ----------------------------------------------------------
@pytest.mark.parametrize("contract", LINES)
def test_run_sdk_container_options(contract):
    argv = wrap(["./set_official", "--board=amd64-usr", "--official"])
    assert argv[:9] == ["./run_sdk_container", "-U", "-n", "flatcar-sdk-all-1.2.3_os-1.2.3", "-a", "all", "-V", "1.2.3", "--"]
    assert c.command_problems(contract, argv) == []


@pytest.mark.parametrize("contract", LINES)
def test_environment_kiln_passes_reaches_the_container(contract):
    """SDK_ENV_PASSTHROUGH (what SdkStage lets through option environment) and kiln's own FLATCAR_BUILD_ID /
    COREOS_OFFICIAL are all written to sdk_container/.sdkenv; the two kiln always sets survive sudo too."""
    assert c.environment_problems(contract, list(SDK_ENV_PASSTHROUGH)) == []
    assert c.environment_problems(contract, ["FLATCAR_BUILD_ID", "COREOS_OFFICIAL"], sudo=True) == []


# -- the modules' documented choices ----------------------------------------------------------------
def doc_options(module):
    path = os.path.join(REPO, "plugins", "modules", module + ".py")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    start = text.index('DOCUMENTATION = r"""') + len('DOCUMENTATION = r"""')
    return yaml.safe_load(text[start:text.index('"""', start)])["options"]


@pytest.mark.parametrize("contract", LINES)
def test_module_choices_are_subsets_of_the_contract(contract):
    image = doc_options("image")
    assert image["image_types"]["choices"] == list(a.IMAGE_TYPES)
    assert set(a.IMAGE_TYPES) <= set(contract.image_types())
    assert image["compression_formats"]["choices"] == list(a.COMPRESSION_CHOICES)
    assert set(a.COMPRESSION_CHOICES) <= set(contract.compression_formats())
    assert set(vm_formats()) <= set(contract.vm_formats())
    assert doc_options("sysext")["compression"]["choices"] == list(a.SYSEXT_COMPRESSION)
