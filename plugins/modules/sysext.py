#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: sysext
short_description: Build a systemd-sysext image for a Flatcar build (build_sysext)
version_added: 0.1.0
description:
  - Runs C(sudo -E ./build_sysext) in the warm SDK container against the C(flatcar_production_image_sysext.squashfs) of the
    image stage, and records the resulting C(<name>.raw) in the build record as stage C(sysext:<name>).
  - All sysexts of a release must be signed with the same C(SYSEXT_SIGNING_KEY_DIR) as the image; set it through
    O(environment) when you manage the key yourself.
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
  - kiln.flatcar._sdk
  - kiln.flatcar._common
  - kiln.flatcar._common.board_required
  - kiln.flatcar._common.engine
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  name:
    description: Name of the sysext (C(<name>.raw)).
    type: str
    required: true
  packages:
    description: Binary packages to install into the sysext.
    type: list
    elements: str
    default: []
  metapkgs:
    description: C(--metapkgs), comma-separated meta packages.
    type: str
  squashfs_base:
    description: C(--squashfs_base). Defaults to the image stage's C(flatcar_production_image_sysext.squashfs).
    type: path
  output_dir:
    description: Where C(<name>.raw) goes (C(--image_builddir)); defaults to the image output directory.
    type: path
  compression:
    description: C(--compression).
    type: str
    default: lz4hc
    choices: [lz4hc, lz4, zstd, none]
  strip_binaries:
    description: C(--[no]strip_binaries).
    type: bool
    default: false
  generate_pkginfo:
    description: C(--[no]generate_pkginfo).
    type: bool
    default: false
  manglefs_script:
    description: C(--manglefs_script), path inside the scripts checkout.
    type: str
  ignore_version_mismatch:
    description: C(--[no]ignore_version_mismatch).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: A sysext with htop
  kiln.flatcar.sysext:
    scripts_dir: /var/lib/kiln/scripts
    board: amd64-usr
    name: htop
    packages: [sys-process/htop]
"""

RETURN = r"""
changed:
  description: Whether C(build_sysext) ran.
  returned: always
  type: bool
reason:
  description: Why the stage ran or was skipped.
  returned: success
  type: str
sysext:
  description: Path of the built C(<name>.raw) on the builder.
  returned: success
  type: str
outputs:
  description: Files written (path relative to the SDK build root, role, size, sha256).
  returned: success
  type: list
  elements: dict
record_path:
  description: Path of the build record.
  returned: always
  type: str
log_path:
  description: Log of the stage.
  returned: always
  type: str
input_digest:
  description: Digest of the stage's inputs.
  returned: success
  type: str
details:
  description: Sysext name and output directory.
  returned: success
  type: dict
version:
  description: Version fields of the build.
  returned: success
  type: dict
stage:
  description: Stage name in the build record.
  returned: success
  type: str
container_name:
  description: The warm SDK container used.
  returned: success
  type: str
"""

import os

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils._artifacts import changed_files, role_of, snapshot
from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._sdk import COMMON_ARGS, SdkStage
from ansible_collections.kiln.flatcar.plugins.module_utils._validate import check
from ansible_collections.kiln.flatcar.plugins.module_utils._sdkargv import SYSEXT_COMPRESSION, build_sysext_argv, build_sysext_flags


def main():
    spec = dict(COMMON_ARGS)
    spec.update(
        name=dict(type="str", required=True),
        packages=dict(type="list", elements="str", default=[]),
        metapkgs=dict(type="str"),
        squashfs_base=dict(type="path"),
        output_dir=dict(type="path"),
        compression=dict(type="str", default="lz4hc", choices=list(SYSEXT_COMPRESSION)),
        strip_binaries=dict(type="bool", default=False),
        generate_pkginfo=dict(type="bool", default=False),
        manglefs_script=dict(type="str"),
        ignore_version_mismatch=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    check(module, _validate.identifier, p["name"], "sysext name")
    for atom in list(p["packages"]) + (p["metapkgs"] or "").split(","):
        if atom:
            check(module, _validate.package_atom, atom, "packages/metapkgs item")
    if not p["packages"] and not p["metapkgs"]:
        module.fail_json(msg="a sysext needs packages or metapkgs: name what goes into %s.raw" % p["name"])
    stage = SdkStage(module, "sysext:" + p["name"])
    # every SDK command is checked against the checkout before anything else (paths do not matter to it)
    stage.preflight([build_sysext_argv(p, stage.board, "/base.squashfs", "/out")])
    with stage:
        stage.require_stage("image", "run kiln.flatcar.image first")
        rel = stage.record.data.get("build_dir")
        if not rel:
            module.fail_json(msg="build record %s names no build_dir: run kiln.flatcar.image first" % stage.record_path,
                             record_path=stage.record_path)
        build_dir = os.path.join(stage.build_root, rel)
        out_dir = os.path.abspath(p["output_dir"] or build_dir)
        base = p["squashfs_base"] or os.path.join(build_dir, "flatcar_production_image_sysext.squashfs")
        base_c = stage.host_to_container(base, "squashfs_base")
        out_c = stage.host_to_container(out_dir, "output_dir")
        flags = build_sysext_flags(p, stage.board, base_c, out_c)
        argv = build_sysext_argv(p, stage.board, base_c, out_c)
        inputs = stage.base_inputs(previous="image")
        inputs["flags"] = flags
        inputs["packages"] = list(p["packages"])
        raw = os.path.join(out_dir, p["name"] + ".raw")

        def execute():
            if not os.path.isfile(base):
                stage.runner.fail("sysext base %s is missing: build the image with image type prod first" % base)
            os.makedirs(out_dir, exist_ok=True)
            before = snapshot(out_dir)
            # sudo -E like Flatcar's own callers (build_library/prod_image_util.sh): build_sysext reads
            # SYSEXT_SIGNING_KEY_DIR under set -u, and sudoers (sdk_lib/90_env_keep) does not keep it.
            stage.runner.run(stage.sdk_command(["sudo", "-E"] + argv),
                             msg="build_sysext %s failed: see the log" % p["name"])
            if not os.path.isfile(raw):
                stage.runner.fail("build_sysext finished but %s was not written" % raw)
            files = set(changed_files(before, snapshot(out_dir)))
            files.add(raw)
            files = [f for f in files if os.path.basename(f).startswith(p["name"])]
            return [stage.describe(f, "sysext" if f == raw else role_of(f)) for f in sorted(files)], {"name": p["name"], "output_dir": out_dir}

        result = stage.run(inputs, execute)
        result["sysext"] = raw
        module.exit_json(**result)


if __name__ == "__main__":
    main()
