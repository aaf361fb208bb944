#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: rollback_record
short_description: Record a rollback (a Nebraska channel or the mirror's current moved back) in the withdrawn build's record
version_added: 0.2.0
description:
  - Writes the stage C(rollback:<target>) into the build record of the version that was withdrawn (O(record_path)),
    with who asked, why (O(reason)), the version the target points at now and what the channel move and the
    C(current) move returned, like every other stage (input digest, timestamps, status).
  - O(target) names what was rolled back - a Nebraska channel name or V(current) for the mirror's pointer.
  - Rerunning with the same inputs reports no change; check mode writes nothing.
  - Used by C(kiln.flatcar.rollback) (playbooks/rollback.yml) after kiln.flatcar.nebraska_package and
    kiln.flatcar.publish moved the pointers back.
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  record_path:
    description: Build record of the withdrawn version on this host.
    type: path
    required: true
  target:
    description: What was rolled back - a Nebraska channel name, or V(current) for the mirror's C(current) pointer.
    type: str
    required: true
  to_version:
    description: FLATCAR_VERSION the target points at after the rollback.
    type: str
    required: true
  reason:
    description: Why (one line, recorded and printed). Required - a rollback without a reason is refused.
    type: str
    required: true
  requested_by:
    description: Who asked for the rollback (e.g. the controller's user).
    type: str
    default: unknown
  result:
    description: What the move returned (e.g. RV(kiln.flatcar.nebraska_package#module:channel) or
      RV(kiln.flatcar.publish#module:current)); kept in the stage details.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Record that the stable channel went back to 4593.2.5
  kiln.flatcar.rollback_record:
    record_path: /srv/kiln/builds/kiln/amd64-usr/4593.2.5+hotfix-1/build-record.json
    target: stable
    to_version: "4593.2.5"
    reason: "hotfix-1 breaks NFS mounts (INC-4711)"
    result: "{{ nebraska.channel }}"
"""

RETURN = r"""
stage:
  description: Name of the recorded stage.
  returned: always
  type: str
  sample: rollback:stable
record_path:
  description: The record written.
  returned: always
  type: str
"""

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import Stage, guarded, locate

MAX_TARGET = 64


def main():
    module = AnsibleModule(
        argument_spec=dict(
            record_path=dict(type="path", required=True),
            target=dict(type="str", required=True),
            to_version=dict(type="str", required=True),
            reason=dict(type="str", required=True),
            requested_by=dict(type="str", default="unknown"),
            result=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    guarded(module, lambda: run(module))


def run(module):
    p = module.params
    _validate.check(module, _validate.identifier, p["target"], "target (a channel name or 'current')")
    if len(p["target"]) > MAX_TARGET:
        module.fail_json(msg="target is longer than %d characters: give a channel name or 'current'" % MAX_TARGET)
    to_version = _validate.check(module, _validate.version, p["to_version"], "to_version", canonical=True).version
    reason = " ".join(p["reason"].split())
    if not reason or len(reason) > 500:
        module.fail_json(msg="reason must say why in one line of 1 to 500 characters: a rollback is recorded with its reason")
    who = _validate.check(module, _validate.identifier, p["requested_by"] or "unknown", "requested_by")
    name = "rollback:%s" % p["target"]
    inputs = {"target": p["target"], "to_version": to_version, "reason": reason, "requested_by": who}
    result = dict(stage=name, record_path=p["record_path"])
    with Stage(module, name, locate(record_path=p["record_path"])) as stage:
        if stage.record is None:
            module.fail_json(msg="no build record at %s" % p["record_path"], **result)
        current, _why = stage.is_current(inputs)
        if current:
            stage.close()
            module.exit_json(changed=False, **result)
        if module.check_mode:
            module.exit_json(changed=True, **result)
        stage.begin()
        stage.finish([], details={"to_version": to_version, "reason": reason, "requested_by": who,
                                  "result": _plain(p["result"])})
    module.exit_json(changed=True, **result)


def _plain(value, depth=0):
    """The move's result as plain JSON data (strings cut to 200 characters, at most 4 levels)."""
    if depth > 4:
        return None
    if isinstance(value, dict):
        return {str(k)[:64]: _plain(v, depth + 1) for k, v in list(value.items())[:32]}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value[:32]]
    if isinstance(value, str):
        return value[:200]
    return value if isinstance(value, (int, float, bool)) or value is None else str(value)[:200]


if __name__ == "__main__":
    main()
