#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: hotfix_plan
short_description: Plan a hotfix of a released version from its build record (version, pinned sources and flags)
version_added: 0.2.0
description:
  - Reads the build record of O(release) for O(board) under O(build_root) on this host (read only, validated against
    the record schema) and returns what a hotfix build pins - the scripts repository and the base commit the release
    was built from, the release's patches (each must still have the sha256 the release recorded) and mods, its SDK
    version and the flags of its packages and image stages - and the hotfix version.
  - The hotfix version is C(<release>+hotfix-<n>) (C(<release>-hotfix-<n>), build id C(<release build id>-hotfix-<n>), for a
    release with a build id; one C(+) only, valid SemVer build metadata),
    C(n) one more than the highest hotfix number among the versions recorded on this host and O(known_versions)
    (e.g. the versions on the mirror and in Nebraska), so a published or built version is never reused. Run it on
    every builder and take the highest RV(next_number) for all architectures.
  - Checks the hotfix's own O(patches) and O(mods) (the same validation as kiln.flatcar.sdk_checkout) so a malformed
    fix fails here, in seconds, before any host is prepared or anything is built.
  - Writes nothing; the same in check mode.
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._common
  - kiln.flatcar._common.board_required
  - kiln.flatcar._mods
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  release:
    description: FLATCAR_VERSION of the release to hotfix (a version kiln built; canonical form, e.g. V(4593.2.5)).
    type: str
    required: true
  build_root:
    description: Build root on this host that holds C(kiln/<board>/<release>/build-record.json).
    type: path
    required: true
  known_versions:
    description: Versions known elsewhere (the mirror's version directories, Nebraska packages) that must not be reused.
    type: list
    elements: str
    default: []
  patches:
    description: The hotfix's patches on this host; each must be a readable regular file (checked here, before any build).
    type: list
    elements: path
    default: []
"""

EXAMPLES = r"""
- name: Plan hotfix of 4593.2.5
  kiln.flatcar.hotfix_plan:
    release: "4593.2.5"
    board: amd64-usr
    build_root: /var/lib/kiln/scripts/__build__/images
    known_versions: ["4593.2.5", "4593.2.5+hotfix-1"]
  register: plan
"""

RETURN = r"""
release:
  description: The release (canonical FLATCAR_VERSION).
  returned: always
  type: str
record_path:
  description: The release's build record on this host.
  returned: always
  type: str
repo:
  description: Scripts repository the release was checked out from.
  returned: always
  type: str
base_commit:
  description: Commit the release's ref resolved to, before its patches (the hotfix checks out this commit).
  returned: always
  type: str
commit:
  description: Commit the release was built from (after its patches).
  returned: always
  type: str
patches:
  description: The release's patches (paths on this host, verified against the recorded sha256), to apply before the fix.
  returned: always
  type: list
  elements: str
mods:
  description: The release's mods as recorded.
  returned: always
  type: list
  elements: dict
sdk_version:
  description: FLATCAR_SDK_VERSION of the release (the hotfix uses the same SDK).
  returned: always
  type: str
version_id:
  description: FLATCAR_VERSION_ID of the release.
  returned: always
  type: str
packages_flags:
  description: build_packages flags of the release.
  returned: always
  type: list
  elements: str
image_flags:
  description: build_image flags of the release.
  returned: always
  type: list
  elements: str
image_types:
  description: Image types the release built.
  returned: always
  type: list
  elements: str
existing_hotfixes:
  description: Hotfix versions of this release already known (recorded here or in O(known_versions)).
  returned: always
  type: list
  elements: str
next_number:
  description: The hotfix number this host would give.
  returned: always
  type: int
next_build_id:
  description: FLATCAR_BUILD_ID of that hotfix.
  returned: always
  type: str
  sample: hotfix-2
hotfix_mods:
  description: The hotfix's mods as validated (kind, target and sha256 of each).
  returned: always
  type: list
  elements: dict
next_version:
  description: FLATCAR_VERSION of that hotfix.
  returned: always
  type: str
  sample: 4593.2.5+hotfix-2
"""

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import board_args, mods_args
from ansible_collections.kiln.flatcar.plugins.module_utils._hotfix import HotfixError, check_patches, plan
from ansible_collections.kiln.flatcar.plugins.module_utils._mods import ModsError, validate_mods
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import guarded


def main():
    module = AnsibleModule(
        argument_spec=dict(
            release=dict(type="str", required=True),
            build_root=dict(type="path", required=True),
            known_versions=dict(type="list", elements="str", default=[]),
            patches=dict(type="list", elements="path", default=[]),
            **dict(board_args(required=True), **mods_args())
        ),
        supports_check_mode=True,
    )
    guarded(module, lambda: run(module))


def run(module):
    p = module.params
    try:
        known = [_validate.version(v, "known_versions[%d]" % i).version for i, v in enumerate(p["known_versions"])]
        check_patches(p["patches"])
        mods = validate_mods(p["mods"])
        result = plan(p["build_root"], p["board"], p["release"], known)
    except (HotfixError, ModsError, _validate.Invalid) as exc:
        module.fail_json(msg="hotfix_plan: %s" % exc)
    result["hotfix_mods"] = [dict((k, v) for k, v in m.items() if k != "src") for m in mods]
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
