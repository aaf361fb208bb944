# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This doc fragment is PRIVATE to kiln.flatcar. Do not use it from other collections.

from __future__ import annotations


class ModuleDocFragment:
    # The mods option of plugins/module_utils/_argspec.py mods_args(); validated by _mods.validate_mods.

    DOCUMENTATION = r"""
options:
  mods:
    description:
      - Declared changes to the scripts checkout, applied after O(patches) as one commit with author and committer
        C(kiln <kiln@localhost>) and the date of the commit below it, so the same mods give the same commit id
        (C(docs/mods.md)). Every mod is validated before anything is touched; an error is one line naming C(mods[<index>]).
      - Each mod is a dict with a C(kind) and that kind's keys. Paths are absolute paths on the builder.
      - C(kind=ebuild) C(src) (a directory holding C(<name>-<version>[-rN].ebuild), optionally C(Manifest) and C(files/)),
        C(category), optional C(image=true) (add the package to the RDEPEND of C(coreos-base/coreos), the package set
        C(build_image) installs), C(sysext=<name>) (returned in C(sysext_packages)) or C(oem=<id>) (add it to the RDEPEND
        of C(coreos-base/oem-<id>), the metapackage of that OEM's sysext on the OEM partition), optional C(overlay)
        (V(coreos-overlay) or V(portage-stable); default the overlay that already has the package, else coreos-overlay).
        Copied to C(sdk_container/src/third_party/<overlay>/<category>/<name>/) (files with the same name are replaced);
        symlinks pointing out of C(src) are refused.
      - C(kind=patch) C(src) (a C(.patch) or C(.diff) file) and C(package) (C(<category>/<name>)), placed in
        C(coreos-overlay/coreos/user-patches/<category>/<name>/), applied by portage in src_prepare.
      - C(kind=kernel_config) C(options) (list of C(CONFIG_X=y|m|n|"string"|number); C(=n) is written as
        C(# CONFIG_X is not set)), optional C(arch) (V(amd64) or V(arm64), use C(<arch>_defconfig-*) instead of
        C(commonconfig-*) of C(sys-kernel/coreos-modules/files), the newest kernel series).
      - C(kind=use) C(entries) (list of C(<atom> flag -flag)), optional C(arch) (C(profiles/coreos/<arch>/generic/package.use)
        instead of C(profiles/coreos/targets/generic/package.use)).
      - C(kind=accept_keywords) C(entries) (C(<atom> [keyword ...])) for C(profiles/coreos/base/package.accept_keywords);
        C(kind=mask) C(entries) (one atom each) for C(profiles/coreos/targets/generic/package.mask).
      - C(kind=files) C(src) (a directory of files), C(dest) (a directory under C(/usr/) in the image), C(name) and
        one of C(image=true), C(sysext=<name>) or C(oem=<id>); a package C(kiln-files/<name>-1) is generated in coreos-overlay that
        installs the files at C(dest) (root-owned, modes 0755/0644), built from source whenever the files change.
    type: list
    elements: dict
    default: []
"""
