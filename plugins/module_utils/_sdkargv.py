# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Every argv kiln hands to the Flatcar SDK, built in one place by pure functions.

The modules stay thin: they pass their params (and the few derived values such as paths inside the
container) and run what comes back. The unit tests call these functions for every optional branch
and check each argv against the SDK contract (``_contract.py``, ``tests/sdk_contract/``); the
preflight checks the same argv against the scripts checked out on the builder.

Values from options are untrusted: they only ever become one argv word, as ``--flag=value`` or as
a positional after ``--``.
"""

from __future__ import annotations

import os

CONTAINER_ROOT = "/mnt/host/source/src/build"  # run_sdk_container mounts <scripts>/__build__/images here
CONTAINER_SCRIPTS = "/mnt/host/source/src/scripts"  # ... and the scripts checkout itself here

IMAGE_TYPES = ("prod", "prodtar", "container", "sysext", "oem_sysext")
PROD_TYPES = ("prod", "prodtar")  # the types that set build_image's PROD_IMAGE=1
COMPRESSION_CHOICES = ("none", "bz2", "gz", "zip", "zst")
SYSEXT_COMPRESSION = ("lz4hc", "lz4", "zstd", "none")

VM_FORMATS = (
    "akamai ami ami_vmdk azure cloudsigma cloudstack cloudstack_vhd digitalocean exoscale gce hetzner hyperv "
    "hyperv_vhdx iso kubevirt openstack openstack_mini oraclecloud parallels proxmoxve pxe qemu_uefi scaleway stackit "
    "vagrant vagrant_parallels virtualbox vmware vmware_ova vmware_raw xen nutanix"
).split()
VM_ALIASES = {"vmware": ["vmware", "vmware_ova", "vmware_raw"], "ami": ["ami", "ami_vmdk"], "aws": ["ami", "ami_vmdk"]}
# Flatcar CI's per-format compression (ci-automation/vms.sh); everything else gets bz2
VM_COMPRESSION = {
    "openstack_mini": ["gz", "bz2"],
    "digitalocean": ["gz", "bz2"],
    "openstack": ["gz", "bz2", "none"],
    "qemu_uefi": ["bz2", "none"],
    "hyperv": ["zip"],
    "hyperv_vhdx": ["zip"],
    "akamai": ["gz"],
}
for _fmt in ("scaleway", "kubevirt", "proxmoxve", "stackit", "exoscale", "oraclecloud"):
    VM_COMPRESSION[_fmt] = ["none"]


def bool_flag(name, value):
    """shflags boolean: ``--name`` or ``--noname``."""
    return "--%s%s" % ("" if value else "no", name)


def sdk_command(container_name, flavour, sdk_version, argv, image=None):
    """``run_sdk_container -U`` with the pinned container name: version.txt is never rewritten.

    ``image`` (the SDK image under a non-default ``sdk_registry``) becomes ``-C <image>``: run_sdk_container
    then uses that image instead of ``ghcr.io/flatcar/flatcar-sdk-<arch>:<version>`` and never pulls
    (flatcar/scripts run_sdk_container, ``-C) custom_image="$2"`` and ``if [ -n "$custom_image" ]``)."""
    opts = ["-C", image] if image else []
    return ["./run_sdk_container", "-U", "-n", container_name, "-a", flavour, "-V", sdk_version] + opts + ["--"] + list(argv)


def container_path(path, scripts_dir):
    """Where a host path inside the checkout appears in the SDK container, or None when it does not.

    run_sdk_container bind-mounts only <scripts>/__build__/images and <scripts> (and sdk_container)
    when it creates the container; ``-m`` mounts apply only at creation, and kiln reuses one warm
    container, so a file elsewhere on the host cannot be made visible to a later stage."""
    scripts = os.path.realpath(scripts_dir)
    full = os.path.realpath(path)
    build_root = os.path.join(scripts, "__build__", "images")
    for host, inside in ((build_root, CONTAINER_ROOT), (scripts, CONTAINER_SCRIPTS)):
        if full == host:
            return inside
        if full.startswith(host + os.sep):
            return inside + "/" + os.path.relpath(full, host)
    return None


# -- packages ----------------------------------------------------------------------------------
PACKAGES_BOOLS = ("usepkg", "usepkgonly", "getbinpkg", "skip_toolchain_update", "skip_chroot_upgrade",
                  "only_resolve_circular_deps", "fetchonly", "rebuild")


def build_packages_flags(p, board):
    flags = ["--board=" + board]
    for name in PACKAGES_BOOLS:
        flags.append(bool_flag(name, p[name]))
    if p.get("getbinpkgver"):
        flags.append("--getbinpkgver=" + p["getbinpkgver"])
    return flags


def build_packages_argv(p, board):
    """``./build_packages <flags> -- <packages>`` (the packages are untrusted words)."""
    argv = ["./build_packages"] + build_packages_flags(p, board)
    if p.get("packages"):
        argv += ["--"] + list(p["packages"])
    return argv


# -- image ---------------------------------------------------------------------------------------
IMAGE_BOOLS = ("only_store_compressed", "enable_rootfs_verification", "extract_update", "generate_update", "getbinpkg")
IMAGE_STRINGS = ("base_pkg", "base_dev_pkg", "base_sysexts", "oem_sysexts", "disk_layout", "getbinpkgver", "devcontainer_binhost")


def set_official_argv(board, official):
    return ["./set_official", "--board=" + board, bool_flag("official", official)]


def build_image_flags(p, board, developer_data=None):
    """The flags that define the image (the stage's inputs); ``developer_data`` is the container path."""
    flags = ["--board=" + board, "--group=" + p["group"], "--image_compression_formats=" + ",".join(p["compression_formats"])]
    for name in IMAGE_BOOLS:
        flags.append(bool_flag(name, p[name]))
    for name in IMAGE_STRINGS:
        if p.get(name):
            flags.append("--%s=%s" % (name, p[name]))
    if developer_data:
        flags.append("--developer_data=" + developer_data)
    return flags


def build_image_argv(p, board, attempt, output_root, developer_data=None):
    """``./build_image <flags> --build_attempt=N --output_root=<container path> [--replace] <types>``."""
    argv = ["./build_image"] + build_image_flags(p, board, developer_data)
    argv += ["--build_attempt=%d" % attempt, "--output_root=" + output_root]
    if p.get("replace"):
        argv.append("--replace")
    return argv + list(p["image_types"])


def build_image_attempt(existing, image_types, replace):
    """The attempt directory (-a<N>) a build_image run writes to.

    build_image refuses an existing BUILD_DIR only when it builds the production image
    (flatcar/scripts build_image, "# Handle existing directory.":
    ``if [[ -e "${BUILD_DIR}" ]] && [[ "${PROD_IMAGE}" = 1 ]]``; prod and prodtar set PROD_IMAGE=1),
    so a new attempt is needed only then; other types (container, sysext, oem_sysext) are added to
    the newest attempt, next to the flatcar_production_image_sysext.squashfs they build on."""
    existing = sorted(existing)
    if not existing:
        return 1
    if replace or not (set(image_types) & set(PROD_TYPES)):
        return existing[-1]
    return existing[-1] + 1


# -- vm_image ------------------------------------------------------------------------------------
def expand_vm_formats(formats):
    """(expanded formats, error) with the vendor aliases of Flatcar's CI expanded."""
    result = []
    for fmt in formats:
        if fmt == "qemu":
            return None, "format qemu is not valid any more: use qemu_uefi (it also makes the BIOS qemu launcher on amd64)"
        for item in VM_ALIASES.get(fmt, [fmt]):
            if item not in VM_FORMATS:
                return None, "unknown VM image format %r: use one of %s" % (fmt, ", ".join(VM_FORMATS))
            if item not in result:
                result.append(item)
    return result, None


def vm_compression(fmt, overrides=None):
    return list((overrides or {}).get(fmt) or VM_COMPRESSION.get(fmt, ["bz2"]))


def image_to_vm_flags(p, board, fmt, container_dir, compression):
    flags = ["--board=" + board, "--format=" + fmt, "--from=" + container_dir, "--to=" + container_dir,
             "--image_compression_formats=" + ",".join(compression), bool_flag("only_store_compressed", p["only_store_compressed"])]
    if p.get("disk_layout"):
        flags.append("--disk_layout=" + p["disk_layout"])
    if p.get("mem"):
        flags.append("--mem=" + str(p["mem"]))
    return flags


def image_to_vm_argv(p, board, fmt, container_dir, compression):
    return ["./image_to_vm.sh"] + image_to_vm_flags(p, board, fmt, container_dir, compression)


# -- sysext --------------------------------------------------------------------------------------
def build_sysext_flags(p, board, squashfs_base, image_builddir):
    """``squashfs_base`` and ``image_builddir`` are container paths."""
    flags = ["--board=" + board, "--squashfs_base=" + squashfs_base, "--image_builddir=" + image_builddir,
             "--compression=" + p["compression"], bool_flag("strip_binaries", p["strip_binaries"]),
             bool_flag("generate_pkginfo", p["generate_pkginfo"]), bool_flag("ignore_version_mismatch", p["ignore_version_mismatch"])]
    if p.get("metapkgs"):
        flags.append("--metapkgs=" + p["metapkgs"])
    if p.get("manglefs_script"):
        flags.append("--manglefs_script=" + p["manglefs_script"])
    return flags


def build_sysext_argv(p, board, squashfs_base, image_builddir):
    """``./build_sysext <flags> -- <name> <packages>`` (run under sudo by the module)."""
    return ["./build_sysext"] + build_sysext_flags(p, board, squashfs_base, image_builddir) + ["--", p["name"]] + list(p.get("packages") or [])
