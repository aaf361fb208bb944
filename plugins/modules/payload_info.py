#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: payload_info
short_description: Inspect and verify a Flatcar CrAU update payload
version_added: 0.1.0
description:
  - Parses a CrAU update payload (C(flatcar_production_update.gz), C(oem-*.gz), C(flatcar-*.gz)) in pure Python -
    header, C(DeltaArchiveManifest), blob hashes of every operation and the C(Signatures) message.
  - Verifies the RSA PKCS#1 v1.5 signatures against the given PEM public keys (no third-party crypto libraries).
  - Returns what Nebraska and C(flatcar-update) need - size, sha1 (base64), sha256 (base64 and hex) - in one read pass.
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
  path:
    description:
      - The payload, a regular file (a FIFO, device or directory is refused at once).
      - Exactly one of O(path) and O(paths) is required.
    type: path
  paths:
    description:
      - Several payloads, inspected in one call (one SSH round trip instead of one per payload); the result is
        RV(payloads), one entry per path in this order. Each must be a regular file, as for O(path).
      - With O(fail_on_invalid), the first invalid payload fails the call and names its path.
    type: list
    elements: path
    version_added: 0.3.0
  public_keys:
    description: PEM RSA public keys (C(update-payload-key.pub.pem) style) the payload must verify with.
    type: list
    elements: path
    default: []
  public_key_contents:
    description: PEM public keys given inline.
    type: list
    elements: str
    default: []
  check_blobs:
    description: Check every operation's C(data_sha256_hash) while reading.
    type: bool
    default: true
  fail_on_invalid:
    description: Fail when a public key verifies no signature, or a blob hash or the layout is wrong. Otherwise only report it.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Values for registering the payload with Nebraska
  kiln.flatcar.payload_info:
    path: /srv/update/amd64-usr/4593.2.5/flatcar_production_update.gz
    public_keys: [files/update-payload-key.pub.pem]
  register: payload

- name: Every payload of a build in one call
  kiln.flatcar.payload_info:
    paths:
      - /srv/update/amd64-usr/4593.2.5/flatcar_production_update.gz
      - /srv/update/amd64-usr/4593.2.5/oem-azure.gz
    public_keys: [files/update-payload-key.pub.pem]
  register: payloads
"""

RETURN = r"""
changed:
  description: Always false.
  returned: always
  type: bool
payloads:
  description: With O(paths), one entry per payload, in the order of O(paths); each has C(path) and the fields below.
  returned: success and O(paths) given
  type: list
  elements: dict
  version_added: 0.3.0
size:
  description: Payload size in bytes.
  returned: success
  type: int
sha1_base64:
  description: Base64 of the sha1 (Nebraska C(hash)).
  returned: success
  type: str
sha256_base64:
  description: Base64 of the sha256 (Omaha C(flatcar_action.sha256)).
  returned: success
  type: str
sha256_hex:
  description: Hex sha256 (Nebraska C(hash256) of extra files, the C(.sha256) file on update servers).
  returned: success
  type: str
format_version:
  description: CrAU file format version (1).
  returned: success
  type: int
manifest_size:
  description: Size of the serialized manifest.
  returned: success
  type: int
metadata_size:
  description: Header plus manifest size.
  returned: success
  type: int
manifest:
  description: Summary of the manifest (operations, partition info, procedures such as the kernel, signature location).
  returned: success
  type: dict
signed:
  description: Whether the manifest declares a signature blob.
  returned: success
  type: bool
signature_count:
  description: Number of signatures in the Signatures message.
  returned: success
  type: int
signatures:
  description: Each signature's version, size and the public key that verified it.
  returned: success
  type: list
  elements: dict
verified:
  description: Every given public key verified a signature.
  returned: success
  type: bool
verified_keys:
  description: Public keys that verified a signature.
  returned: success
  type: list
  elements: str
problems:
  description: What is wrong (empty when the payload is fine).
  returned: success
  type: list
  elements: str
"""

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils._crau import PayloadError, inspect, load_rsa_public_key, open_regular
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import guarded


def load_keys(module, paths, contents):
    keys = []
    for path in paths:
        try:
            with open_regular(path) as fh:  # never a FIFO or device: they would block or never end
                keys.append((path, load_rsa_public_key(fh.read(1024 * 1024).decode("ascii", "replace"))))
        except (OSError, PayloadError) as exc:
            module.fail_json(msg="public key %s: %s" % (path, exc))
    for i, text in enumerate(contents):
        try:
            keys.append(("public_key_contents[%d]" % i, load_rsa_public_key(text)))
        except PayloadError as exc:
            module.fail_json(msg="public_key_contents[%d]: %s" % (i, exc))
    return keys


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path"),
            paths=dict(type="list", elements="path"),
            public_keys=dict(type="list", elements="path", default=[]),
            public_key_contents=dict(type="list", elements="str", default=[]),
            check_blobs=dict(type="bool", default=True),
            fail_on_invalid=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("path", "paths")],
        required_one_of=[("path", "paths")],
        supports_check_mode=True,
    )
    guarded(module, lambda: run(module))


def run(module):
    p = module.params
    keys = load_keys(module, p["public_keys"], p["public_key_contents"])
    if p["paths"] is None:
        module.exit_json(changed=False, **inspect_one(module, p["path"], keys))
    module.exit_json(changed=False, payloads=[inspect_one(module, path, keys) for path in p["paths"]])


def inspect_one(module, path, keys):
    p = module.params
    try:
        info = inspect(path, keys, check_blobs=p["check_blobs"])
    except (OSError, PayloadError) as exc:
        module.fail_json(msg="%s is not a valid update payload: %s" % (path, exc))
    if p["fail_on_invalid"] and info["problems"]:
        module.fail_json(msg="%s failed verification: %s" % (path, info["problems"][0]), **info)
    return info


if __name__ == "__main__":
    main()
