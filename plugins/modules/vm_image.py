#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_image
short_description: Make vendor VM images from a built Flatcar image (image_to_vm.sh)
version_added: 0.1.0
description:
  - Runs C(./image_to_vm.sh --format <f>) for each of O(formats) in the warm SDK container, on the output directory of
    the image stage, with Flatcar CI's per-format compression defaults (C(ci-automation/vms.sh)).
  - Each format is its own stage (C(vm_image:<format>)) in the build record, so adding a format does not rebuild the
    others, and a rerun skips formats whose outputs still verify.
  - Vendor aliases are expanded like Flatcar's CI does (V(vmware) gives V(vmware), V(vmware_ova), V(vmware_raw);
    V(ami)/V(aws) give V(ami), V(ami_vmdk)). V(qemu) is not a valid format any more; V(qemu_uefi) also produces the
    BIOS C(qemu) launcher on amd64.
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
  formats:
    description: "Vendor formats to produce (see C(VALID_IMG_TYPES) in C(build_library/vm_image_util.sh))."
    type: list
    elements: str
    required: true
  compression:
    description:
      - "Per-format override of C(--image_compression_formats), for example C({qemu_uefi: [none]})."
      - Defaults follow C(ci-automation/vms.sh).
    type: dict
    default: {}
  only_store_compressed:
    description: C(--[no]only_store_compressed).
    type: bool
    default: true
  disk_layout:
    description: C(--disk_layout).
    type: str
  mem:
    description: C(--mem).
    type: str
"""

EXAMPLES = r"""
- name: QEMU and OpenStack images
  kiln.flatcar.vm_image:
    scripts_dir: /var/lib/kiln/scripts
    board: amd64-usr
    formats: [qemu_uefi, openstack]
"""

RETURN = r"""
changed:
  description: Whether any format was built.
  returned: always
  type: bool
formats:
  description: Per-format results.
  returned: success
  type: dict
  contains:
    stage:
      description: The format's stage in the build record (C(vm_image:<format>)).
      type: str
    changed:
      description: Whether this format was built.
      type: bool
    reason:
      description: Why it ran or was skipped.
      type: str
    compression:
      description: Compression formats used.
      type: list
      elements: str
    outputs:
      description: Files written (path relative to the SDK build root, role, size, sha256).
      type: list
      elements: dict
    log_path:
      description: Log of this format's run.
      type: str
build_dir:
  description: The image output directory the VM images were written to.
  returned: success
  type: str
record_path:
  description: Path of the build record.
  returned: always
  type: str
"""

import os

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils._artifacts import changed_files, list_files, role_of, snapshot
from ansible_collections.kiln.flatcar.plugins.module_utils._sdk import CONTAINER_ROOT, COMMON_ARGS, SdkStage
from ansible_collections.kiln.flatcar.plugins.module_utils._sdkargv import (
    COMPRESSION_CHOICES,
    VM_FORMATS,
    expand_vm_formats,
    image_to_vm_argv,
    image_to_vm_flags,
    vm_compression,
)

VALID_FORMATS = VM_FORMATS


def expand_formats(module, formats):
    result, error = expand_vm_formats(formats)
    if error:
        module.fail_json(msg=error)
    return result


def image_build_dir(module, stage):
    """The image stage's output directory (the image stage must have passed)."""
    stage.require_stage("image", "run kiln.flatcar.image first")
    rel = stage.record.data.get("build_dir")
    if not rel:
        module.fail_json(msg="build record %s names no build_dir: run kiln.flatcar.image first" % stage.record_path,
                         record_path=stage.record_path)
    return os.path.join(stage.build_root, rel)


def make_executor(stage, flags, fmt, build_dir, comp):
    """The work of one format: run image_to_vm.sh and record what it wrote."""
    prefix = "flatcar_production_%s" % fmt

    def execute():
        before = snapshot(build_dir)
        stage.runner.run(stage.sdk_command(["./image_to_vm.sh"] + list(flags)), msg="image_to_vm.sh --format=%s failed: see the log" % fmt)
        files = set(changed_files(before, snapshot(build_dir)))
        files.update(f for f in list_files(build_dir) if os.path.basename(f).startswith(prefix))
        if not files:
            stage.runner.fail("image_to_vm.sh --format=%s wrote nothing into %s" % (fmt, build_dir))
        return [stage.describe(f, role_of(f)) for f in sorted(files)], {"format": fmt, "compression": comp}

    return execute


def main():
    spec = dict(COMMON_ARGS)
    spec.update(
        formats=dict(type="list", elements="str", required=True),
        compression=dict(type="dict", default={}),
        only_store_compressed=dict(type="bool", default=True),
        disk_layout=dict(type="str"),
        mem=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    formats = expand_formats(module, p["formats"])
    if not formats:
        module.fail_json(msg="formats is empty: name at least one VM image format, e.g. qemu_uefi")
    for fmt, comp in p["compression"].items():
        comp = comp if isinstance(comp, list) else [c.strip() for c in str(comp).split(",")]
        bad = [c for c in comp if c not in COMPRESSION_CHOICES]
        if bad or fmt not in VALID_FORMATS:
            module.fail_json(msg="compression for %s is invalid (%s): use a valid format and any of %s"
                             % (fmt, ", ".join(bad) or "unknown format", ", ".join(COMPRESSION_CHOICES)))
        p["compression"][fmt] = comp

    results = {}
    build_dir = None
    record_path = None
    for index, fmt in enumerate(formats):
        stage = SdkStage(module, "vm_image:" + fmt)
        if index == 0:
            # every format is checked before the first one runs (paths do not matter to the check)
            placeholder = CONTAINER_ROOT + "/images/" + stage.board
            stage.preflight([image_to_vm_argv(p, stage.board, f, placeholder, vm_compression(f, p["compression"])) for f in formats])
        record_path = stage.record_path
        with stage:
            build_dir = image_build_dir(module, stage)
            comp = vm_compression(fmt, p["compression"])
            cdir = stage.host_to_container(build_dir)
            flags = image_to_vm_flags(p, stage.board, fmt, cdir, comp)
            stage.preflight([["./image_to_vm.sh"] + flags])
            inputs = stage.base_inputs(previous="image")
            inputs["flags"] = flags
            res = stage.run(inputs, make_executor(stage, flags, fmt, build_dir, comp))
        results[fmt] = dict(stage=stage.stage, changed=res["changed"], reason=res["reason"], compression=comp, outputs=res["outputs"],
                            log_path=res["log_path"])
    module.exit_json(changed=any(r["changed"] for r in results.values()), formats=results, build_dir=build_dir, record_path=record_path)


if __name__ == "__main__":
    main()
