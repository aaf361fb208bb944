#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image
short_description: Build Flatcar OS images (set_official + build_image) in the SDK container
version_added: 0.1.0
description:
  - Runs C(./set_official) and C(./build_image) with the chosen image types through C(run_sdk_container -U) in the warm
    SDK container that built the packages.
  - Finds the real output directory C(__build__/images/images/<board>/<group>-<FLATCAR_VERSION>-a<N>), records every file
    in it (path, role, size, sha256) in the build record, and returns them.
  - A rerun with the same inputs whose outputs still verify is skipped. When inputs changed, a build that includes
    V(prod) or V(prodtar) goes to the next attempt directory (C(-a<N+1>)) so the previous artifacts are kept, unless
    O(replace=true). A build of other types only (V(container), V(sysext), V(oem_sysext)) is added to the newest
    attempt directory, next to the C(flatcar_production_image_sysext.squashfs) it builds on (C(build_image) refuses an
    existing directory only for the production image).
  - Before anything runs, even in check mode, the flags, image types and environment are checked against the scripts
    checked out in O(scripts_dir); a build they do not support fails at once with one line.
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
  image_types:
    description: Image types to build (C(build_image)'s positional arguments).
    type: list
    elements: str
    choices: [prod, prodtar, container, sysext, oem_sysext]
    default: [prod, oem_sysext]
  group:
    description: Update group baked into C(/usr/share/flatcar/update.conf) (C(--group)); also the output directory prefix.
    type: str
    default: developer
  base_pkg:
    description: C(--base_pkg).
    type: str
  base_dev_pkg:
    description: C(--base_dev_pkg).
    type: str
  base_sysexts:
    description: C(--base_sysexts), e.g. V(containerd-flatcar|app-containers/containerd).
    type: str
  oem_sysexts:
    description: C(--oem_sysexts), V(everything!) or a comma-separated list of OEM ids.
    type: str
  disk_layout:
    description: C(--disk_layout).
    type: str
  compression_formats:
    description: C(--image_compression_formats).
    type: list
    elements: str
    choices: [none, bz2, gz, zip, zst]
    default: [bz2]
  only_store_compressed:
    description: C(--[no]only_store_compressed).
    type: bool
    default: true
  enable_rootfs_verification:
    description: C(--[no]enable_rootfs_verification) (dm-verity on /usr).
    type: bool
    default: true
  extract_update:
    description: C(--[no]extract_update) (writes C(flatcar_production_update.bin)).
    type: bool
    default: true
  generate_update:
    description: C(--[no]generate_update) (dev-key signed C(flatcar_test_update.gz), non-official builds only).
    type: bool
    default: true
  getbinpkg:
    description: C(--[no]getbinpkg).
    type: bool
    default: false
  getbinpkgver:
    description: C(--getbinpkgver).
    type: str
  developer_data:
    description:
      - C(--developer_data), a cloud-config file inside the scripts checkout (O(scripts_dir)), which C(run_sdk_container)
        mounts into the SDK container; it is passed as the path inside the container. A file elsewhere is refused.
    type: path
  devcontainer_binhost:
    description: C(--devcontainer_binhost).
    type: str
  replace:
    description: Overwrite the current attempt directory (C(--replace)) instead of building into the next attempt.
    type: bool
    default: false
  min_free_gb:
    description: Refuse to start with less free disk (GiB) on the checkout's filesystem.
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Build the production image and the OEM sysexts
  kiln.flatcar.image:
    scripts_dir: /var/lib/kiln/scripts
    board: amd64-usr
    image_types: [prod, oem_sysext]
    group: stable
  async: 10800
  poll: 0
  register: image_job
"""

RETURN = r"""
changed:
  description: Whether C(build_image) ran.
  returned: always
  type: bool
reason:
  description: Why the stage ran or was skipped.
  returned: success
  type: str
build_dir:
  description: Absolute path of the image output directory on the builder.
  returned: success
  type: str
outputs:
  description: Every file in the output directory.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: Path relative to the SDK build root (C(<scripts_dir>/__build__/images)).
      type: str
    role:
      description: What the file is (generic_image, kernel, sysext_base, update_image, oem_sysext, report, ...).
      type: str
    size:
      description: Size in bytes.
      type: int
    sha256:
      description: SHA-256 (hex).
      type: str
record_path:
  description: Path of the build record.
  returned: always
  type: str
log_path:
  description: Log of the stage on the builder.
  returned: always
  type: str
input_digest:
  description: Digest of the stage's inputs.
  returned: success
  type: str
details:
  description: Attempt number, build directory (relative) and image types.
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
import re

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils._artifacts import list_files, role_of
from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._sdk import COMMON_ARGS, SdkStage
from ansible_collections.kiln.flatcar.plugins.module_utils._validate import check
from ansible_collections.kiln.flatcar.plugins.module_utils._sdkargv import (
    COMPRESSION_CHOICES,
    IMAGE_TYPES,
    PROD_TYPES,
    build_image_argv,
    build_image_attempt,
    build_image_flags,
    set_official_argv,
)


def image_dirs(board_dir, group, version):
    """{attempt: path} of existing output directories for this group and version."""
    found = {}
    prefix = "%s-%s-a" % (group, version)
    try:
        names = os.listdir(board_dir)
    except OSError:
        return found
    for name in names:
        if name.startswith(prefix) and re.match(r"^\d+$", name[len(prefix):]):
            found[int(name[len(prefix):])] = os.path.join(board_dir, name)
    return found


def main():
    spec = dict(COMMON_ARGS)
    spec.update(
        image_types=dict(type="list", elements="str", default=["prod", "oem_sysext"], choices=list(IMAGE_TYPES)),
        group=dict(type="str", default="developer"),
        base_pkg=dict(type="str"),
        base_dev_pkg=dict(type="str"),
        base_sysexts=dict(type="str"),
        oem_sysexts=dict(type="str"),
        disk_layout=dict(type="str"),
        compression_formats=dict(type="list", elements="str", default=["bz2"], choices=list(COMPRESSION_CHOICES)),
        only_store_compressed=dict(type="bool", default=True),
        enable_rootfs_verification=dict(type="bool", default=True),
        extract_update=dict(type="bool", default=True),
        generate_update=dict(type="bool", default=True),
        getbinpkg=dict(type="bool", default=False),
        getbinpkgver=dict(type="str"),
        developer_data=dict(type="path"),
        devcontainer_binhost=dict(type="str"),
        replace=dict(type="bool", default=False),
        min_free_gb=dict(type="int", default=0),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    if not p["image_types"]:
        module.fail_json(msg="image_types is empty: name at least one of prod, prodtar, container, sysext, oem_sysext")
    check(module, _validate.group, p["group"])
    stage = SdkStage(module, "image")
    # build_image runs in the container: the cloud-config must be a path it can see there
    developer_data = stage.host_to_container(p["developer_data"], "developer_data") if p["developer_data"] else None
    flags = build_image_flags(p, stage.board, developer_data)
    output_root = stage.host_to_container(os.path.join(stage.build_root, "images"))
    stage.preflight([set_official_argv(stage.board, stage.version.official),
                     build_image_argv(p, stage.board, 1, output_root, developer_data)])
    with stage:
        inputs = stage.base_inputs(previous="packages")
        inputs["flags"] = list(flags)
        inputs["image_types"] = list(p["image_types"])

        board_dir = os.path.join(stage.build_root, "images", stage.board)

        def execute():
            stage.require_stage("packages", "run kiln.flatcar.packages first")
            if p["min_free_gb"]:
                stage.check_disk(stage.scripts_dir, p["min_free_gb"] * 1024 ** 3)
            # a new attempt only when build_image would refuse the existing one (prod/prodtar): other
            # types join the newest attempt and its flatcar_production_image_sysext.squashfs
            attempt = build_image_attempt(image_dirs(board_dir, p["group"], stage.version.version), p["image_types"], p["replace"])
            stage.runner.run(stage.sdk_command(set_official_argv(stage.board, stage.version.official)),
                             msg="set_official failed for %s: see the log" % stage.board)
            stage.runner.run(stage.sdk_command(build_image_argv(p, stage.board, attempt, output_root, developer_data)),
                             msg="build_image failed for %s: see the log" % stage.board)
            build_dir = os.path.join(board_dir, "%s-%s-a%d" % (p["group"], stage.version.version, attempt))
            if not os.path.isdir(build_dir):
                stage.runner.fail("build_image finished but %s does not exist: the SDK wrote its images elsewhere" % build_dir)
            outputs = [stage.describe(f, role_of(f)) for f in list_files(build_dir)]
            wants_prod = set(p["image_types"]) & set(PROD_TYPES)
            if wants_prod and not any(o["role"] == "generic_image" for o in outputs):
                stage.runner.fail("build_image finished but %s holds no flatcar_production_image.bin" % build_dir)
            rel = os.path.relpath(build_dir, stage.build_root)
            stage.record.set("build_dir", rel)
            stage.record.set("group", p["group"])
            return outputs, {"attempt": attempt, "build_dir": rel, "image_types": list(p["image_types"])}

        result = stage.run(inputs, execute)
        build_dir = result.get("details", {}).get("build_dir") or stage.record.data.get("build_dir")
        result["build_dir"] = os.path.join(stage.build_root, build_dir) if build_dir else None
        module.exit_json(**result)


if __name__ == "__main__":
    main()
