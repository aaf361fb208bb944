#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: nebraska_package
short_description: Register a Flatcar update payload as a Nebraska package and optionally promote it to a channel
version_added: 0.1.0
description:
  - Registers C(flatcar_production_update.gz) of one board and version through Nebraska's REST API
    (C(POST /api/apps/<appid>/packages)) the way Flatcar's C(upload_package) does it, with C(arch) 1 for amd64 and 2 for
    arm64, C(type) 1 (Flatcar), C(hash) the base64 SHA-1, C(flatcar_action.sha256) the base64 SHA-256, C(size) and
    C(url) (the directory holding the payload), and C(extra_files) (extension and OEM payloads) with hex SHA-256.
  - Idempotent. A package with the same version and arch that matches field by field leaves everything unchanged; one
    that differs is an error (a version is never re-registered with other content).
  - With O(channel), points that channel (same arch) at the package (C(PUT /api/apps/<appid>/channels/<id>)), only
    forward unless O(allow_downgrade=true).
  - "The token travels only in the C(Authorization: Bearer) header."
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
  url:
    description: Base URL of the Nebraska server (e.g. V(https://nebraska.example)).
    type: str
    required: true
  token:
    description: Bearer token (OIDC access token or GitHub token, as the server's auth mode wants).
    type: str
  app_id:
    description: Application id or product id. Flatcar's is V(e96281a6-d1af-4bde-9a0a-97b76e56dc57).
    type: str
    default: e96281a6-d1af-4bde-9a0a-97b76e56dc57
  version:
    description: Package version (FLATCAR_VERSION, what clients report and compare).
    type: str
    required: true
  arch:
    description: Architecture of the payload.
    type: str
    choices: [amd64, arm64]
    required: true
  package_url:
    description: URL of the directory that holds the payload, e.g. RV(kiln.flatcar.publish#module:update_url).
    type: str
    required: true
  filename:
    description: Payload file name inside O(package_url).
    type: str
    default: flatcar_production_update.gz
  payload_path:
    description: The payload on this host; size and hashes are computed from it. Alternative to O(payload) and O(record_path).
    type: path
  payload:
    description: Size and hashes of the payload (e.g. the C(payload) stage details of the build record).
    type: dict
    suboptions:
      size:
        description: Size in bytes.
        type: int
        required: true
      sha1_b64:
        description: Base64 SHA-1.
        type: str
        required: true
      sha256_b64:
        description: Base64 SHA-256.
        type: str
        required: true
  record_path:
    description:
      - Build record on this host. Size and hashes come from the C(payload) stage details (C(details.payloads[]) as
        M(kiln.flatcar.update_payload) records them; extension payloads C(oem-*.gz)/C(flatcar-*.gz) there become
        C(extra_files)).
    type: path
  extra_files:
    description: Extension and OEM payloads registered as C(extra_files) (a path on this host or explicit fields).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: File on this host (name, size and hashes are computed).
        type: path
      name:
        description: File name.
        type: str
      size:
        description: Size in bytes.
        type: int
      sha1_b64:
        description: Base64 SHA-1.
        type: str
      sha256_hex:
        description: Hex SHA-256.
        type: str
  description:
    description: Package description; default C(Flatcar Container Linux <version>).
    type: str
  channels_blacklist:
    description: Channel ids the package must never be promoted to.
    type: list
    elements: str
    default: []
  channel:
    description: Channel name to promote the package to (a channel with this name and arch must exist unless O(create_channel)).
    type: str
  create_channel:
    description: Create O(channel) when it does not exist.
    type: bool
    default: false
  channel_color:
    description: Color of a channel created by O(create_channel).
    type: str
    default: "#777777"
  allow_downgrade:
    description: Allow pointing O(channel) at a version older than its current package.
    type: bool
    default: false
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  timeout:
    description: HTTP timeout in seconds.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Register the payload published by kiln.flatcar.publish and promote it
  kiln.flatcar.nebraska_package:
    url: https://nebraska.example
    token: "{{ nebraska_token }}"
    version: "{{ published.version }}"
    arch: amd64
    package_url: "{{ published.update_url }}"
    record_path: "{{ published.record_path }}"
    channel: stable
"""

RETURN = r"""
changed:
  description: Whether a package was created or a channel moved.
  returned: always
  type: bool
package:
  description: The package as Nebraska returns it (wire field names).
  returned: success
  type: dict
package_id:
  description: Nebraska id of the package.
  returned: success
  type: str
created:
  description: Whether the package was created by this run.
  returned: success
  type: bool
channel:
  description: The channel after promotion (when O(channel) is set).
  returned: when channel is set
  type: dict
  contains:
    id:
      description: Channel id.
      type: str
    name:
      description: Channel name.
      type: str
    before:
      description: Package id the channel pointed at before.
      type: str
    changed:
      description: Whether the channel moved.
      type: bool
    reason:
      description: Why it moved or not.
      type: str
"""

import base64
import hashlib
import json
import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.parse import quote, urlencode
from ansible.module_utils.urls import fetch_url

from ansible_collections.kiln.flatcar.plugins.module_utils._stage import Stage, locate
from ansible_collections.kiln.flatcar.plugins.module_utils._version import VersionError, compare

ARCH = {"amd64": 1, "arm64": 2}
PKG_TYPE_FLATCAR = 1
PER_PAGE = 100


def file_identity(path):
    sha1 = hashlib.sha1()
    sha256 = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1024 * 1024)
            if not block:
                break
            size += len(block)
            sha1.update(block)
            sha256.update(block)
    return {"name": os.path.basename(path), "size": size, "sha1_b64": base64.b64encode(sha1.digest()).decode(),
            "sha256_b64": base64.b64encode(sha256.digest()).decode(), "sha256_hex": sha256.hexdigest()}


class Nebraska:
    def __init__(self, module):
        self.module = module
        p = module.params
        self.base = p["url"].rstrip("/")
        self.app = p["app_id"]

    def request(self, method, path, body=None, query=None):
        url = self.base + path + (("?" + urlencode(query)) if query else "")
        headers = {"Accept": "application/json"}
        if self.module.params["token"]:
            headers["Authorization"] = "Bearer " + self.module.params["token"]
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        resp, info = fetch_url(self.module, url, data=data, headers=headers, method=method,
                               timeout=self.module.params["timeout"])
        status = info.get("status", -1)
        raw = resp.read() if resp is not None else info.get("body", b"")
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if status < 200 or status >= 300:
            detail = " ".join((raw or info.get("msg") or "").split())[:300]
            hint = {401: "check the token", 403: "the token lacks permission", 404: "check url and app_id",
                    400: "the server rejected the request body"}.get(status, "see the server log")
            self.module.fail_json(msg="Nebraska %s %s returned HTTP %s (%s): %s" % (method, path, status, hint, detail),
                                  status=status, url=url)
        try:
            return json.loads(raw) if raw and raw.strip() else None
        except ValueError:
            self.module.fail_json(msg="Nebraska %s %s returned something that is not JSON" % (method, path), status=status)

    def app_path(self, *parts):
        return "/api/apps/%s/%s" % (quote(self.app, safe=""), "/".join(quote(str(p), safe="") for p in parts))

    def packages(self, version):
        found = []
        page = 1
        while True:
            data = self.request("GET", self.app_path("packages"), query={"page": page, "perpage": PER_PAGE, "searchVersion": version}) or {}
            items = data.get("packages") or []
            found.extend(items)
            if not items or len(found) >= int(data.get("totalCount") or 0):
                return found
            page += 1

    def channels(self):
        found = []
        page = 1
        while True:
            data = self.request("GET", self.app_path("channels"), query={"page": page, "perpage": PER_PAGE}) or {}
            items = data.get("channels") or []
            found.extend(items)
            if not items or len(found) >= int(data.get("totalCount") or 0):
                return found
            page += 1


def wanted_package(module):
    p = module.params
    payload = None
    extra = []
    if p["payload_path"]:
        payload = file_identity(p["payload_path"])
    elif p["payload"]:
        payload = dict(p["payload"])
    elif p["record_path"]:
        location = locate(p["record_path"])
        with Stage(module, None, location, writes=False) as reader:
            stage = reader.require("payload", "sign the update payload first (kiln.flatcar.update_payload)")
        root = location.build_root
        d = stage.get("details") or {}
        listed = [pl for pl in d.get("payloads") or [] if isinstance(pl, dict)]
        if listed:
            # kiln.flatcar.update_payload: details.payloads[] = {name, size, sha1_base64, sha256_base64, sha256_hex}
            main = [pl for pl in listed if pl.get("name") == p["filename"]]
            if not main:
                module.fail_json(msg="stage payload in %s has no payload named %s" % (p["record_path"], p["filename"]))
            payload = {"size": int(main[0]["size"]), "sha1_b64": main[0]["sha1_base64"], "sha256_b64": main[0]["sha256_base64"]}
            for pl in listed:
                if pl.get("name") != p["filename"] and re.match(r"^(oem|flatcar)-.+\.gz$", pl.get("name") or ""):
                    extra.append({"name": pl["name"], "size": int(pl["size"]), "sha1_b64": pl["sha1_base64"],
                                  "sha256_hex": pl["sha256_hex"]})
        else:
            missing = [k for k in ("size", "sha1_b64", "sha256_b64") if k not in d]
            if missing:
                module.fail_json(msg="stage payload in %s lacks details.payloads (or %s)" % (p["record_path"], ", ".join(missing)))
            payload = {"size": int(d["size"]), "sha1_b64": d["sha1_b64"], "sha256_b64": d["sha256_b64"]}
            for out in stage.get("outputs", []):
                if out.get("role") == "extension_payload":
                    extra.append(file_identity(os.path.join(root, out["path"])))
    else:
        module.fail_json(msg="give payload_path, payload or record_path for the payload's size and hashes")
    for item in p["extra_files"]:
        if item.get("path"):
            extra.append(file_identity(item["path"]))
        else:
            missing = [k for k in ("name", "size", "sha1_b64", "sha256_hex") if item.get(k) in (None, "")]
            if missing:
                module.fail_json(msg="extra_files entry %r needs path, or %s" % (item.get("name"), ", ".join(missing)))
            extra.append(dict(item))
    for key in ("sha1_b64", "sha256_b64"):
        try:
            raw = base64.b64decode(payload[key], validate=True)
        except (ValueError, TypeError):
            module.fail_json(msg="payload %s is not base64" % key)
        if len(raw) != (20 if key == "sha1_b64" else 32):
            module.fail_json(msg="payload %s has the wrong length for its hash" % key)
    url = p["package_url"]
    if not url.endswith("/"):
        url += "/"
    body = {
        "application_id": p["app_id"],
        "arch": ARCH[p["arch"]],
        "channels_blacklist": list(p["channels_blacklist"]),
        "description": p["description"] or "Flatcar Container Linux %s" % p["version"],
        "filename": p["filename"],
        "hash": payload["sha1_b64"],
        "size": str(int(payload["size"])),
        "type": PKG_TYPE_FLATCAR,
        "url": url,
        "version": p["version"],
        "flatcar_action": {"sha256": payload["sha256_b64"]},
    }
    if extra:
        body["extra_files"] = [{"name": e["name"], "size": str(int(e["size"])), "hash": e["sha1_b64"], "hash256": e["sha256_hex"]}
                               for e in sorted(extra, key=lambda e: e["name"])]
    return body


def differences(existing, body):
    diffs = []
    for key in ("url", "filename", "hash", "size", "type"):
        if str(existing.get(key)) != str(body.get(key)):
            diffs.append(key)
    if ((existing.get("flatcar_action") or {}).get("sha256")) != body["flatcar_action"]["sha256"]:
        diffs.append("flatcar_action.sha256")

    def files(items):
        return sorted((f.get("name"), str(f.get("size")), f.get("hash"), f.get("hash256")) for f in (items or []))

    if files(existing.get("extra_files")) != files(body.get("extra_files")):
        diffs.append("extra_files")
    return diffs


def channel(module, neb, pkg, arch):
    """Point the channel at the package (creating it when asked; never back to an older version unless allowed)."""
    p = module.params
    chans = [c for c in neb.channels() if c.get("name") == p["channel"] and int(c.get("arch", -1)) == arch]
    info = {"name": p["channel"], "id": None, "before": None, "changed": False, "reason": None}
    if not chans:
        if not p["create_channel"]:
            module.fail_json(msg="Nebraska has no channel %r for %s in app %s: create it or set create_channel"
                             % (p["channel"], p["arch"], p["app_id"]))
        info.update(changed=True, reason="created")
        if not module.check_mode:
            chan = neb.request("POST", neb.app_path("channels"), body={
                "application_id": p["app_id"], "arch": arch, "color": p["channel_color"], "name": p["channel"],
                "package_id": pkg.get("id")})
            info["id"] = chan.get("id")
    else:
        chan = chans[0]
        info["id"] = chan.get("id")
        info["before"] = chan.get("package_id") or None
        if info["before"] == pkg.get("id") and pkg.get("id"):
            info["reason"] = "already on this package"
        else:
            move = True
            if info["before"]:
                old = (chan.get("package") or {}).get("version")
                if not old:
                    old = (neb.request("GET", neb.app_path("packages", info["before"])) or {}).get("version")
                try:
                    older = old and compare(p["version"], old) < 0
                except VersionError:
                    older = False
                if older and not p["allow_downgrade"]:
                    move = False
                    info["reason"] = "channel is on newer %s; not moved back (allow_downgrade)" % old
                    module.warn("channel %s stays on %s: %s is older" % (p["channel"], old, p["version"]))
            if move:
                info.update(changed=True, reason="promoted")
                if not module.check_mode:
                    neb.request("PUT", neb.app_path("channels", chan["id"]), body={
                        "application_id": p["app_id"], "arch": arch, "color": chan.get("color") or p["channel_color"],
                        "name": chan.get("name"), "package_id": pkg.get("id")})
    return info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            token=dict(type="str", no_log=True),
            app_id=dict(type="str", default="e96281a6-d1af-4bde-9a0a-97b76e56dc57"),
            version=dict(type="str", required=True),
            arch=dict(type="str", choices=["amd64", "arm64"], required=True),
            package_url=dict(type="str", required=True),
            filename=dict(type="str", default="flatcar_production_update.gz"),
            payload_path=dict(type="path"),
            payload=dict(type="dict", options=dict(size=dict(type="int", required=True), sha1_b64=dict(type="str", required=True),
                                                   sha256_b64=dict(type="str", required=True))),
            record_path=dict(type="path"),
            extra_files=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="path"), name=dict(type="str"), size=dict(type="int"), sha1_b64=dict(type="str"),
                sha256_hex=dict(type="str"))),
            description=dict(type="str"),
            channels_blacklist=dict(type="list", elements="str", default=[]),
            channel=dict(type="str"),
            create_channel=dict(type="bool", default=False),
            channel_color=dict(type="str", default="#777777"),
            allow_downgrade=dict(type="bool", default=False),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="int", default=30),
        ),
        mutually_exclusive=[("payload_path", "payload", "record_path")],
        supports_check_mode=True,
    )
    p = module.params
    if not re.match(r"^https?://", p["url"]):
        module.fail_json(msg="url %r is not an http(s) URL" % p["url"])
    neb = Nebraska(module)
    body = wanted_package(module)
    arch = body["arch"]
    result = {"changed": False, "created": False}
    existing = [pkg for pkg in neb.packages(p["version"]) if pkg.get("version") == p["version"] and int(pkg.get("arch", -1)) == arch]
    if existing:
        pkg = existing[0]
        diffs = differences(pkg, body)
        if diffs:
            module.fail_json(msg="Nebraska already has package %s for %s (id %s) with different %s: a version is never re-registered "
                             "with other content; publish a new version or delete the package in Nebraska by hand"
                             % (p["version"], p["arch"], pkg.get("id"), ", ".join(diffs)), package=pkg, differences=diffs)
    elif module.check_mode:
        pkg = dict(body, id=None)
        result.update(changed=True, created=True)
    else:
        pkg = neb.request("POST", neb.app_path("packages"), body=body)
        result.update(changed=True, created=True)
    result["package"] = pkg
    result["package_id"] = pkg.get("id")

    if p["channel"]:
        result["channel"] = channel(module, neb, pkg, arch)
        result["changed"] = result["changed"] or result["channel"]["changed"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
