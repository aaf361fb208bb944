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
    description:
      - Package version (FLATCAR_VERSION, what clients report and compare), e.g. V(4593.2.5) or V(4593.2.5+kiln-1); a
        channel prefix (V(stable-4593.2.5)) is refused because clients never report it.
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
  payloads:
    description:
      - The signed payloads as M(kiln.flatcar.update_payload) returns them (RV(kiln.flatcar.update_payload#module:payloads))
        or the C(payload) stage of a build record holds them (C(details.payloads[])), from any host. The entry named
        O(filename) is the payload; extension payloads C(oem-*.gz)/C(flatcar-*.gz) become C(extra_files).
      - Alternative to O(payload_path), O(payload) and O(record_path). An empty list fails (the version has no signed payload).
    type: list
    elements: dict
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
    description: HTTP timeout in seconds (1 to 3600).
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
import stat

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule
from ansible.module_utils.six.moves.urllib.parse import quote, urlencode
from ansible.module_utils.urls import fetch_url

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._record import BOARDS
from ansible_collections.kiln.flatcar.plugins.module_utils._safety import UnsafePath, confine
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import Stage, locate
from ansible_collections.kiln.flatcar.plugins.module_utils._version import VersionError, compare

# Nebraska's arch enum (backend/pkg/api/arch.go: AMD64 = 1, AARCH64 = 2) for the arches of kiln's boards.
ARCH = {"amd64": 1, "arm64": 2}
PKG_TYPE_FLATCAR = 1
PER_PAGE = 100
# A list endpoint whose totalCount never matches what it pages out is answered with an error after this many pages
# (100 x PER_PAGE entries): never an endless loop.
MAX_PAGES = 100
MAX_SIZE = 2 ** 63 - 1


class NebraskaAnswerError(Exception):
    """The server answered something kiln cannot use; one line."""


def file_identity(module, path, what="payload_path"):
    """Name, size and hashes of a regular file on this host; one-line failure for anything else."""
    sha1 = hashlib.sha1()
    sha256 = hashlib.sha256()
    size = 0
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would hang the read
            module.fail_json(msg="%s %s is not a regular file" % (what, path))
        with open(path, "rb") as fh:
            while True:
                block = fh.read(1024 * 1024)
                if not block:
                    break
                size += len(block)
                sha1.update(block)
                sha256.update(block)
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cannot read %s %r: %s" % (what, path, getattr(exc, "strerror", None) or exc))
    return {"name": os.path.basename(path), "size": size, "sha1_b64": base64.b64encode(sha1.digest()).decode(),
            "sha256_b64": base64.b64encode(sha256.digest()).decode(), "sha256_hex": sha256.hexdigest()}


def check_b64(module, value, length, what):
    """A base64 hash of ``length`` bytes, or a one-line failure."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        module.fail_json(msg="%s is not base64" % what)
    if len(raw) != length:
        module.fail_json(msg="%s has the wrong length for its hash" % what)


def as_int(value, default=-1):
    """An integer from a server or record value, ``default`` for anything that is not one."""
    if isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def size_of(module, value, what):
    """A byte size (0 .. 2**63-1) from an option or a build record."""
    size = as_int(value, None)
    if size is None or size < 0 or size > MAX_SIZE:
        module.fail_json(msg="%s %r is not a size in bytes" % (what, value))
    return size


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
            data = json.loads(raw) if raw and raw.strip() else None
        except ValueError:
            self.module.fail_json(msg="Nebraska %s %s returned something that is not JSON" % (method, path), status=status)
        if data is not None and not isinstance(data, dict):
            # every operation kiln uses answers an object (Nebraska openapi-spec.yaml)
            self.module.fail_json(msg="Nebraska %s %s returned a JSON %s instead of an object: is url a Nebraska server?"
                                  % (method, path, type(data).__name__), status=status, url=url)
        return data

    def app_path(self, *parts):
        return "/api/apps/%s/%s" % (quote(self.app, safe=""), "/".join(quote(str(p), safe="") for p in parts))

    def pages(self, what, query=None):
        """Every entry of a paged list (``{totalCount, <what>: [...]}``), at most MAX_PAGES pages."""
        found = []
        for page in range(1, MAX_PAGES + 1):
            data = self.request("GET", self.app_path(what), query=dict(query or {}, page=page, perpage=PER_PAGE)) or {}
            items = data.get(what) or []
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                self.module.fail_json(msg="Nebraska GET %s page %d has %s that is not a list of objects"
                                      % (self.app_path(what), page, what))
            found.extend(items)
            if not items or len(found) >= as_int(data.get("totalCount"), 0):
                return found
        detail = (self.app_path(what), what, MAX_PAGES, len(found), data.get("totalCount"))
        self.module.fail_json(msg="Nebraska GET %s still had more %s after %d pages (%d entries, totalCount %r): the server's "
                              "paging is broken or the list is too long for kiln" % detail)
        return found  # not reached

    def packages(self, version):
        return self.pages("packages", {"searchVersion": version})

    def channels(self):
        return self.pages("channels")


def from_payload_list(module, listed, where):
    """(payload, extra_files) from kiln.flatcar.update_payload's list of
    {name, size, sha1_base64, sha256_base64, sha256_hex}: the entry named ``filename`` and the extension payloads."""
    filename = module.params["filename"]
    main = [pl for pl in listed if pl.get("name") == filename]
    if not main:
        module.fail_json(msg="%s has no payload named %s" % (where, filename))
    payload = {"size": size_of(module, main[0].get("size"), "%s: size of %s" % (where, filename)),
               "sha1_b64": main[0].get("sha1_base64"), "sha256_b64": main[0].get("sha256_base64")}
    extra = []
    for pl in listed:
        name = pl.get("name") if isinstance(pl.get("name"), str) else ""
        if name != filename and re.match(r"^(oem|flatcar)-[A-Za-z0-9._+-]+\.gz\Z", name):
            digest = pl.get("sha256_hex")
            if not isinstance(digest, str) or not re.match(r"^[0-9a-f]{64}\Z", digest):
                module.fail_json(msg="%s: %s has no valid sha256_hex" % (where, name))
            extra.append({"name": name, "size": size_of(module, pl.get("size"), "%s: size of %s" % (where, name)),
                          "sha1_b64": pl.get("sha1_base64"), "sha256_hex": digest})
    return payload, extra


def wanted_package(module):
    p = module.params
    payload = None
    extra = []
    if p["payload_path"]:
        payload = file_identity(module, p["payload_path"])
    elif p["payload"]:
        payload = dict(p["payload"])
        payload["size"] = size_of(module, payload["size"], "payload size")
    elif p["payloads"] is not None:
        if not p["payloads"]:
            module.fail_json(msg="payloads is empty: that version has no signed update payload (run kiln.flatcar.update_payload)")
        payload, extra = from_payload_list(module, p["payloads"], "payloads")
    elif p["record_path"]:
        location = locate(p["record_path"])
        with Stage(module, None, location, writes=False) as reader:
            stage = reader.require("payload", "sign the update payload first (kiln.flatcar.update_payload)")
        root = location.build_root
        d = stage.get("details") or {}
        d = d if isinstance(d, dict) else {}
        where = "stage payload in %s" % p["record_path"]
        payloads = d.get("payloads") if isinstance(d.get("payloads"), list) else []
        listed = [pl for pl in payloads if isinstance(pl, dict)]
        if listed:
            payload, extra = from_payload_list(module, listed, where)
        else:
            missing = [k for k in ("size", "sha1_b64", "sha256_b64") if k not in d]
            if missing:
                module.fail_json(msg="%s lacks details.payloads (or %s)" % (where, ", ".join(missing)))
            payload = {"size": size_of(module, d["size"], "%s: size" % where), "sha1_b64": d["sha1_b64"], "sha256_b64": d["sha256_b64"]}
            outputs = stage.get("outputs") if isinstance(stage.get("outputs"), list) else []
            for out in outputs:
                if isinstance(out, dict) and out.get("role") == "extension_payload":
                    try:  # a path from the record: inside the build root or refused
                        path = confine(root, out.get("path"), "extension payload path")
                    except UnsafePath as exc:
                        module.fail_json(msg="%s: %s" % (where, exc))
                    extra.append(file_identity(module, path, "extension payload"))
    else:
        module.fail_json(msg="give payload_path, payload, payloads or record_path for the payload's size and hashes")
    for item in p["extra_files"]:
        if item.get("path"):
            extra.append(file_identity(module, item["path"], "extra_files path"))
        else:
            missing = [k for k in ("name", "size", "sha1_b64", "sha256_hex") if item.get(k) in (None, "")]
            if missing:
                module.fail_json(msg="extra_files entry %r needs path, or %s" % (item.get("name"), ", ".join(missing)))
            _validate.check(module, _validate.file_name, item["name"], "extra_files name")
            item = dict(item, size=size_of(module, item["size"], "extra_files %s size" % item["name"]))
            if not re.match(r"^[0-9a-f]{64}\Z", item["sha256_hex"]):
                module.fail_json(msg="extra_files %s sha256_hex is not 64 lowercase hex digits" % item["name"])
            extra.append(item)
    for key in ("sha1_b64", "sha256_b64"):
        check_b64(module, payload.get(key), 20 if key == "sha1_b64" else 32, "payload %s" % key)
    for item in extra:
        check_b64(module, item.get("sha1_b64"), 20, "extra file %s sha1_b64" % item.get("name"))
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
    chans = [c for c in neb.channels() if c.get("name") == p["channel"] and as_int(c.get("arch")) == arch]
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
            info["id"] = (chan or {}).get("id")
    else:
        chan = chans[0]
        info["id"] = chan.get("id")
        info["before"] = chan.get("package_id") or None
        if info["before"] == pkg.get("id") and pkg.get("id"):
            info["reason"] = "already on this package"
        else:
            move = True
            if info["before"]:
                old = chan.get("package").get("version") if isinstance(chan.get("package"), dict) else None
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
            if move and not chan.get("id"):
                module.fail_json(msg="Nebraska listed channel %r without an id" % p["channel"])
            if move:
                info.update(changed=True, reason="promoted")
                if not module.check_mode:
                    neb.request("PUT", neb.app_path("channels", chan["id"]), body={
                        "application_id": p["app_id"], "arch": arch, "color": chan.get("color") or p["channel_color"],
                        "name": chan.get("name"), "package_id": pkg.get("id")})
    return info


def validate(module):
    """Every option before the first request (one line on failure); ``version`` becomes the canonical FLATCAR_VERSION."""
    p = module.params
    v = _validate
    v.check(module, v.url, p["url"], "url")
    v.check(module, v.url, p["package_url"], "package_url")
    p["version"] = v.check(module, v.version, p["version"], "version", canonical=True).version
    v.check(module, v.identifier, p["app_id"], "app_id")
    v.check(module, v.file_name, p["filename"], "filename")
    if p["channel"] is not None:
        v.check(module, v.group, p["channel"], "channel")
    token = p["token"]
    if token is not None and (not token.strip() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token)):
        module.fail_json(msg="token is empty or contains whitespace or control characters (it goes into an HTTP header)")
    for what in ("description", "channel_color"):
        if p[what] is not None and any(ord(c) < 32 and c not in "\t" for c in p[what]):
            module.fail_json(msg="%s contains control characters" % what)
    if not 1 <= p["timeout"] <= 3600:
        module.fail_json(msg="timeout %d is not between 1 and 3600 seconds" % p["timeout"])


def new_module(**kwargs):
    """The AnsibleModule; a ``payload`` that is not a dict (an int, a list) fails in one line.

    ansible-core validates the suboptions of a dict option even when the value could not be made a dict, and raises
    TypeError there (module_utils/common/parameters.py set_fallbacks: ``param not in parameters``)."""
    try:
        return AnsibleModule(**kwargs)
    except TypeError as exc:
        spec = dict(kwargs["argument_spec"], payload=dict(type="raw"))
        module = AnsibleModule(**dict(kwargs, argument_spec=spec))
        if module.params["payload"] is not None and not isinstance(module.params["payload"], dict):
            module.fail_json(msg="payload must be a dict with size, sha1_b64 and sha256_b64, not %s" % type(module.params["payload"]).__name__)
        module.fail_json(msg="invalid arguments: %s" % " ".join(str(exc).split()))
    return None  # not reached


def main():
    module = new_module(
        argument_spec=dict(
            url=dict(type="str", required=True),
            token=dict(type="str", no_log=True),
            app_id=dict(type="str", default="e96281a6-d1af-4bde-9a0a-97b76e56dc57"),
            version=dict(type="str", required=True),
            arch=dict(type="str", choices=sorted(set(BOARDS.values())), required=True),
            package_url=dict(type="str", required=True),
            filename=dict(type="str", default="flatcar_production_update.gz"),
            payload_path=dict(type="path"),
            payload=dict(type="dict", options=dict(size=dict(type="int", required=True), sha1_b64=dict(type="str", required=True),
                                                   sha256_b64=dict(type="str", required=True))),
            payloads=dict(type="list", elements="dict"),
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
        mutually_exclusive=[("payload_path", "payload", "payloads", "record_path")],
        supports_check_mode=True,
    )
    p = module.params
    validate(module)
    neb = Nebraska(module)
    body = wanted_package(module)
    arch = body["arch"]
    result = {"changed": False, "created": False}
    existing = [pkg for pkg in neb.packages(p["version"]) if pkg.get("version") == p["version"] and as_int(pkg.get("arch")) == arch]
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
        if not pkg or not pkg.get("id"):
            module.fail_json(msg="Nebraska POST %s answered without the new package's id" % neb.app_path("packages"))
        result.update(changed=True, created=True)
    result["package"] = pkg
    result["package_id"] = pkg.get("id")

    if p["channel"]:
        result["channel"] = channel(module, neb, pkg, arch)
        result["changed"] = result["changed"] or result["channel"]["changed"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
