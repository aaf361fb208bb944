# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Names of Flatcar build artifacts and the role kiln gives each (flatcar-sdk.md §2.3, §2.4)."""

from __future__ import annotations

import os
import re

# (pattern, role) in priority order; first match wins
_ROLES = (
    (r"\.(sig|asc|DIGESTS)$", "signature"),
    (r"^flatcar_production_image\.bin(\.(bz2|gz|zst|zip))?$", "generic_image"),
    (r"^flatcar_production_image\.vmlinuz$", "kernel"),
    (r"^flatcar_production_image\.(grub|shim)$", "bootloader"),
    (r"^flatcar_production_image_sysext\.squashfs$", "sysext_base"),
    (r"^flatcar_production_update\.bin(\.(bz2|gz|zst))?$", "update_image"),
    (r"^flatcar_production_update\.zip$", "update_generator"),
    (r"^flatcar_production_update\.gz$", "update_payload"),
    (r"^(oem|flatcar)-[A-Za-z0-9_.-]+\.gz$", "extension_payload"),
    (r"^flatcar_test_update(-.+)?\.gz$", "test_payload"),
    (r"^oem-[A-Za-z0-9_.-]+\.raw$", "oem_sysext"),
    (r"^flatcar-[A-Za-z0-9_.-]+\.raw$", "extra_sysext"),
    (r"^flatcar-container\.tar\.gz$", "container_tarball"),
    (r"^flatcar_developer_container\.bin(\.(bz2|gz|zst))?$", "developer_container"),
    (r"^flatcar_production_[a-z0-9_]+_efi_(code|vars)\.(qcow2|fd)$", "vm_firmware"),
    (r"^flatcar_production_[a-z0-9_]+\.(sh|README)$", "vm_launcher"),
    (r"^flatcar_production_[a-z0-9_]+_image\.[a-z0-9.]+$", "vm_image"),
    (r"^version\.txt$", "version"),
    (r"_pcr_policy\.zip$", "report"),
    (r"\.(txt|json)$", "report"),
    (r"\.raw$", "sysext"),
)
_COMPILED = tuple((re.compile(p), r) for p, r in _ROLES)


def role_of(name):
    base = os.path.basename(name)
    for rx, role in _COMPILED:
        if rx.search(base):
            return role
    return "other"


def list_files(directory):
    """Regular files under ``directory`` (recursive, sorted, symlinks skipped)."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                found.append(full)
    return found


def snapshot(directory):
    """{path: (size, mtime_ns, inode)} of the regular files in a directory tree."""
    snap = {}
    if not os.path.isdir(directory):
        return snap
    for full in list_files(directory):
        st = os.stat(full)
        snap[full] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return snap


def changed_files(before, after):
    return sorted(p for p, ident in after.items() if before.get(p) != ident)
