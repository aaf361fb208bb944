#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: host_state
short_description: Check or record a host's prepared-state digest so roles skip preparation that is already done
version_added: 0.3.0
description:
  - A role's preparation (package installs, accounts, configuration files) is slow to re-verify on every run.
    The role passes what it was asked to set up as O(inputs); the module keeps their sha256 in
    C(<dir>/<name>.json) on the host.
  - O(state=check) reports RV(current) (the recorded digest equals this one and the record is at most O(max_age)
    seconds old) and never writes. O(state=recorded) writes the digest after the preparation succeeded.
  - Checks a role must make every run (a daemon answers, free disk) belong outside what it skips.
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  name:
    description:
      - What was prepared, e.g. the role's name; a string of letters, digits, C(.), C(_), C(-) (it names the record file,
        so a boolean or number is refused rather than converted).
    type: raw
    required: true
  inputs:
    description: Everything the preparation depends on (variables, template contents), any JSON data.
    type: raw
    required: true
  dir:
    description: Directory of the records on the host.
    type: path
    default: /var/lib/kiln/host-state
  state:
    description: V(check) compares, V(recorded) writes.
    type: str
    choices: [check, recorded]
    default: check
  max_age:
    description: Seconds after which a record no longer counts (0 = never expires), so preparation reruns now and then.
    type: int
    default: 86400
"""

EXAMPLES = r"""
- name: Is the builder prepared as asked?
  kiln.flatcar.host_state:
    name: builder
    inputs:
      packages: "{{ packages }}"
  register: prepared

- name: Install the packages
  ansible.builtin.apt:
    name: "{{ packages }}"
  when: not prepared.current

- name: Remember what was prepared
  kiln.flatcar.host_state:
    name: builder
    inputs:
      packages: "{{ packages }}"
    state: recorded
"""

RETURN = r"""
current:
  description: Whether the record holds this digest and is recent enough (always true after O(state=recorded)).
  returned: always
  type: bool
reason:
  description: Why RV(current) is what it is, e.g. C(no record yet), C(inputs changed), C(unchanged for 40 s).
  returned: always
  type: str
digest:
  description: sha256 of O(inputs) as canonical JSON.
  returned: always
  type: str
path:
  description: The record on the host.
  returned: always
  type: str
"""

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _hoststate, _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import guarded


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="raw", required=True),
            inputs=dict(type="raw", required=True),
            dir=dict(type="path", default="/var/lib/kiln/host-state"),
            state=dict(type="str", default="check", choices=["check", "recorded"]),
            max_age=dict(type="int", default=86400),
        ),
        supports_check_mode=True,
    )
    guarded(module, lambda: run(module))


def run(module):
    p = module.params
    _validate.check(module, _validate.identifier, p["name"], "name")
    if not 0 <= p["max_age"] <= 365 * 86400:
        module.fail_json(msg="max_age %d is out of range: give 0 to 31536000 seconds" % p["max_age"])
    try:
        digest = _hoststate.digest_of(p["inputs"])
    except (TypeError, ValueError) as exc:
        module.fail_json(msg="inputs cannot be digested as JSON: %s" % " ".join(str(exc).split()))
    path = _hoststate.state_path(p["dir"], p["name"])
    current, reason, rec = _hoststate.check(path, digest, p["max_age"])
    result = dict(changed=False, current=current, reason=reason, digest=digest, path=path)
    if p["state"] == "recorded":
        # a record of the same digest is renewed (its age restarts) without counting as a change
        result["changed"] = rec is None or rec.get("digest") != digest
        if not module.check_mode:
            try:
                _hoststate.record(path, p["name"], digest)
            except OSError as exc:
                module.fail_json(msg="cannot write %s: %s" % (path, exc.strerror or exc), path=path)
        result.update(current=True, reason="recorded")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
