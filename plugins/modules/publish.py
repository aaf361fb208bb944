#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: publish
short_description: Publish a signed, boot-checked Flatcar build to a release mirror (directory over SSH, local, or S3)
version_added: 0.1.0
description:
  - Runs on the host that holds the build (builder or signer). Reads the build record
    C(<build_root>/kiln/<board>/<FLATCAR_VERSION>/build-record.json), checks the publish gate (a passed boot check and
    GPG signatures for every published image), verifies every file against the record, and publishes it in Flatcar's
    release layout C(<base>/<board>/<version>/...) with C(<base>/<board>/current) pointing at a version, and update
    payloads under C(<update_base>/<board>/<version>/flatcar_production_update.gz) plus C(.sha256) as
    C(flatcar-update) expects.
  - Publishing is atomic. Files go to a hidden staging name (C(.kiln-staging-<version>)), are verified (size and
    sha256) against the build record on the mirror itself, and only then appear under the version path with one
    C(rename). C(current) moves last, only after a post-publish verify, and only forward unless O(allow_downgrade=true).
  - Backend C(dir) reaches the mirror host over SSH. C(rsync) runs B(on the source host) straight to the mirror host;
    nothing goes through the Ansible controller. The mirror host needs C(python3) and C(rsync).
    Backend C(local) publishes to a directory on the same host. Backend C(s3) uploads with boto3 to any
    S3-compatible endpoint (O(endpoint_url)); there C(current) is a small object rewritten last, next to
    C(current/version.txt).
  - A rerun skips every file already published with the recorded size and sha256. A file already published under the
    same version with other content is an error ("version uniqueness"), never an overwrite.
  - O(mode=verify) only checks a published version against the build record (tamper detection).
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
  mode:
    description:
      - V(publish) publishes the build (and verifies it afterwards); V(verify) only verifies an already published version
        against the build record and fails on any difference.
    type: str
    choices: [publish, verify]
    default: publish
  backend:
    description:
      - V(dir) a directory on O(mirror_host) reached over SSH with rsync; V(local) a directory on this host;
        V(s3) an S3-compatible bucket.
    type: str
    choices: [dir, local, s3]
    required: true
  record_path:
    description: Path of the build record. Alternative to O(build_root) + O(board) + O(version).
    type: path
  build_root:
    description:
      - The SDK build root (C(<scripts_dir>/__build__/images)); output paths in the record are relative to it.
      - Defaults to the build root the record's location implies.
    type: path
  board:
    description: Board of the build, used with O(build_root) and O(version) to find the record.
    type: str
    choices: [amd64-usr, arm64-usr]
  version:
    description: FLATCAR_VERSION of the build, used with O(build_root) and O(board) to find the record.
    type: str
  base:
    description:
      - Release base. For V(dir) and V(local) an absolute directory on the mirror; for V(s3) a key prefix (may be empty).
      - Versions go to C(<base>/<board>/<version>/), the pointer to C(<base>/<board>/current).
    type: str
    required: true
  update_base:
    description: Base for update payloads (C(<update_base>/<board>/<version>/)). Defaults to C(<base>/update).
    type: str
  stages:
    description: Build-record stages whose outputs are published (shell patterns; only stages with status C(passed)).
    type: list
    elements: str
    default: ["image", "vm_image:*", "sysext:*", "sign", "payload"]
  include:
    description: Publish only outputs whose file name (or the file it is a signature of) matches one of these patterns.
    type: list
    elements: str
    default: ["*"]
  exclude:
    description: Leave out outputs whose file name (or the file it is a signature of) matches one of these patterns.
    type: list
    elements: str
    default: ["flatcar_test_update*"]
  update_current:
    description: Move C(<base>/<board>/current) to this version after a successful publish (only forward).
    type: bool
    default: true
  allow_downgrade:
    description: Allow moving C(current) to a version older than the one it points at.
    type: bool
    default: false
  require_boot_check:
    description: Gate. Refuse a build whose record has no C(boot_check:<firmware>) stage with C(details.verdict == passed).
    type: bool
    default: true
  boot_check_stages:
    description: Gate. Boot-check stages that must all have passed (e.g. V(boot_check:bios)); empty means at least one.
    type: list
    elements: str
    default: []
  require_signatures:
    description:
      - Gate. Refuse a build unless the C(sign) stage passed and every published image file (roles such as generic_image,
        vm_image, kernel, update_image, sysexts) has a C(.sig) recorded by it.
    type: bool
    default: true
  signing_key:
    description:
      - Gate. Armored public GPG key (file on the source host). When set, every C(.sig) is checked with
        C(gpg --verify) against a keyring holding only this key.
    type: path
  gate_override:
    description:
      - Publish although the gate found problems. The problems and O(gate_override_reason) are returned, warned about,
        and recorded in the build record stage C(publish:<target_name>).
    type: bool
    default: false
  gate_override_reason:
    description: Why the gate is overridden; required with O(gate_override=true).
    type: str
  target_name:
    description: Name of the target in the build record (stage C(publish:<target_name>)).
    type: str
    default: mirror
  record_publish:
    description: Record the publish (stage C(publish:<target_name>)) in the build record.
    type: bool
    default: true
  public_url:
    description: HTTP(S) URL under which O(base) is served; used to return URLs.
    type: str
  update_public_url:
    description: HTTP(S) URL under which O(update_base) is served; the returned RV(update_url) is what Nebraska needs.
    type: str
  mirror_host:
    description: Mirror host for V(dir) (name or address as seen from the source host).
    type: str
  mirror_user:
    description: SSH user on the mirror host.
    type: str
  mirror_port:
    description: SSH port of the mirror host.
    type: int
    default: 22
  ssh_private_key_file:
    description: Private key file on the source host for SSH to the mirror.
    type: path
  ssh_private_key:
    description: Private key text for SSH to the mirror; written to a 0600 file in a private temporary directory.
    type: str
  ssh_known_hosts_file:
    description: Known-hosts file for the mirror host key.
    type: path
  ssh_host_key_checking:
    description: C(StrictHostKeyChecking) for the mirror connection.
    type: str
    choices: ["yes", "accept-new", "no"]
    default: accept-new
  ssh_extra_args:
    description: Extra arguments for C(ssh) (e.g. V(-o ProxyJump=bastion) as two items).
    type: list
    elements: str
    default: []
  rsync_executable:
    description: rsync on the source host (default from PATH).
    type: path
  rsync_extra_args:
    description: Extra rsync arguments (e.g. V(--bwlimit=50m), V(--compress)).
    type: list
    elements: str
    default: []
  remote_rsync_path:
    description: rsync on the mirror host (C(--rsync-path)).
    type: str
    default: rsync
  remote_python:
    description: Python 3 interpreter on the mirror host.
    type: str
    default: python3
  bucket:
    description: Bucket for V(s3).
    type: str
  endpoint_url:
    description: S3 endpoint URL (any S3-compatible server); AWS when unset.
    type: str
  region:
    description: S3 region.
    type: str
    default: us-east-1
  access_key:
    description: S3 access key id (default credential chain when unset).
    type: str
  secret_key:
    description: S3 secret key.
    type: str
  session_token:
    description: S3 session token.
    type: str
  s3_addressing_style:
    description: Bucket addressing; V(path) works with every S3-compatible server. Default V(path) with O(endpoint_url), V(auto) without.
    type: str
    choices: [auto, path, virtual]
  s3_verify:
    description:
      - How S3 objects are verified. V(content) reads every object back and hashes it (detects any tampering);
        V(metadata) trusts size plus the C(sha256) user metadata kiln writes (cheaper, detects accidents only).
    type: str
    choices: [content, metadata]
    default: content
  validate_certs:
    description: Verify TLS certificates of the S3 endpoint.
    type: bool
    default: true
  verify_source:
    description: Hash every source file and compare with the build record before sending it.
    type: bool
    default: true
notes:
  - The gate reads stage names written by other kiln modules, see C(docs/publishing.md) for the exact expectations.
  - On S3 there is no multi-object atomicity; objects are copied from staging to the version prefix only after all were
    verified, C(version.txt) last, and C(current) moves only after the post-publish verify.
requirements:
  - rsync and ssh on the source host, python3 and rsync on the mirror host (backend dir)
  - boto3 (backend s3)
  - gpg (only with O(signing_key))
"""

EXAMPLES = r"""
- name: Publish amd64 to the mirror host over SSH (rsync runs on the builder)
  kiln.flatcar.publish:
    backend: dir
    build_root: /var/lib/kiln/scripts/__build__/images
    board: amd64-usr
    version: "4593.2.5+kiln-1"
    base: /srv/kiln-mirror/stable
    update_base: /srv/kiln-mirror/update
    mirror_host: mirror.example.internal
    mirror_user: kiln-publish
    ssh_private_key_file: /var/lib/kiln/.ssh/publish_ed25519
    public_url: https://mirror.example.internal/stable
    update_public_url: https://mirror.example.internal/update
    signing_key: /etc/kiln/image-signing-key.asc

- name: Publish to S3-compatible storage
  kiln.flatcar.publish:
    backend: s3
    record_path: /var/lib/kiln/scripts/__build__/images/kiln/arm64-usr/4593.2.5/build-record.json
    bucket: flatcar-releases
    base: stable
    endpoint_url: https://s3.example.internal
    access_key: "{{ s3_access_key }}"
    secret_key: "{{ s3_secret_key }}"

- name: Audit a published version (fails on any difference from the build record)
  kiln.flatcar.publish:
    mode: verify
    backend: local
    record_path: /srv/builds/kiln/amd64-usr/4593.2.5/build-record.json
    base: /srv/kiln-mirror/stable
"""

RETURN = r"""
changed:
  description: Whether any file was published or C(current) moved.
  returned: always
  type: bool
board:
  description: Board of the build.
  returned: success
  type: str
version:
  description: FLATCAR_VERSION published.
  returned: success
  type: str
backend:
  description: Backend used.
  returned: success
  type: str
release_path:
  description: Version directory (or S3 key prefix) on the mirror.
  returned: success
  type: str
update_path:
  description: Update payload directory (or S3 key prefix) on the mirror; null when the build has no payload.
  returned: success
  type: str
release_url:
  description: URL of the version directory (with O(public_url)).
  returned: success
  type: str
update_url:
  description: URL of the payload directory, ending in C(/) (with O(update_public_url)); Nebraska's package C(url).
  returned: success
  type: str
files:
  description: Every published file.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: File name.
      type: str
    area:
      description: V(release) or V(update).
      type: str
    size:
      description: Size in bytes.
      type: int
    sha256:
      description: SHA-256 (hex).
      type: str
    role:
      description: Artifact role (generic_image, signature, update_payload, ...).
      type: str
    stage:
      description: Build-record stage the file comes from, or V(generated) for C(.sha256) and C(version.txt) made by kiln.
      type: str
    status:
      description: V(uploaded), V(present) (already published and correct) or, in check mode, V(pending).
      type: str
uploaded:
  description: Names of files sent in this run.
  returned: success
  type: list
  elements: str
current:
  description: The C(current) pointer.
  returned: success
  type: dict
  contains:
    before:
      description: Version C(current) pointed at before.
      type: str
    after:
      description: Version C(current) points at now.
      type: str
    changed:
      description: Whether it moved.
      type: bool
    reason:
      description: Why it moved or not.
      type: str
gate:
  description: Publish gate result.
  returned: success
  type: dict
  contains:
    passed:
      description: Whether every gate check passed.
      type: bool
    overridden:
      description: Whether O(gate_override) let a failing gate through.
      type: bool
    reason:
      description: O(gate_override_reason) when overridden.
      type: str
    problems:
      description: What the gate found.
      type: list
      elements: str
    boot_checks:
      description: Boot-check stages that passed.
      type: list
      elements: str
    signatures:
      description: Number of C(.sig) files checked (cryptographically with O(signing_key)).
      type: int
verify:
  description: Post-publish verification.
  returned: success
  type: dict
  contains:
    checked:
      description: Files checked.
      type: int
    problems:
      description: Differences found (empty when the mirror matches the build record).
      type: list
      elements: str
record_path:
  description: Build record used.
  returned: always
  type: str
log_path:
  description: Log of this publish on the source host.
  returned: always
  type: str
stage:
  description: Build-record stage written (C(publish:<target_name>)).
  returned: success
  type: str
"""

import fnmatch
import hashlib
import os
import re
import shutil
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.kiln.flatcar.plugins.module_utils._artifacts import role_of
from ansible_collections.kiln.flatcar.plugins.module_utils._mirror import (
    PARTIAL_DIR, STAGING_PREFIX, MirrorError, own_source, parse_remote_output, remote_script, run_op,
)
from ansible_collections.kiln.flatcar.plugins.module_utils._record import (
    BuildRecord, RecordError, digest, file_sha256, record_path as make_record_path,
)
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import Runner, which
from ansible_collections.kiln.flatcar.plugins.module_utils._version import FlatcarVersion, VersionError, compare

BOTO_IMPORT_ERROR = None
try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError:  # pragma: no cover - depends on the target
    boto3 = None
    BOTO_IMPORT_ERROR = traceback.format_exc()

SIDECAR_SUFFIXES = (".DIGESTS.asc", ".DIGESTS", ".sig", ".asc", ".sha256")
PAYLOAD_ROLES = ("update_payload", "extension_payload")
# Files flatcar-install, users and the update generator download and must be able to verify.
SIGNED_ROLES = (
    "generic_image", "vm_image", "update_image", "kernel", "bootloader", "sysext_base", "oem_sysext",
    "extra_sysext", "sysext", "container_tarball", "developer_container", "update_generator",
)
CONTENT_TYPES = (
    (r"\.(txt|DIGESTS|asc|sha256|README|sh)$", "text/plain"),
    (r"\.json$", "application/json"),
)


def base_name(name):
    """The file a sidecar (.sig, .DIGESTS, .DIGESTS.asc, .sha256) belongs to."""
    changed = True
    while changed:
        changed = False
        for suffix in SIDECAR_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                changed = True
    return name


def content_type(name):
    for rx, ctype in CONTENT_TYPES:
        if re.search(rx, name):
            return ctype
    return "application/octet-stream"


def join_key(*parts):
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class Publisher:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.tmp = None
        self.record_path = None
        self.record = None
        self.runner = None
        self.log_path = None
        self.files = []
        self.gate = {}

    # -- setup ---------------------------------------------------------------------------------
    def locate_record(self):
        p = self.p
        if p["record_path"]:
            path = os.path.abspath(p["record_path"])
        else:
            if not (p["build_root"] and p["board"] and p["version"]):
                self.module.fail_json(msg="give record_path, or build_root with board and version, to find the build record")
            try:
                version = FlatcarVersion.parse(p["version"]).version
            except VersionError as exc:
                self.module.fail_json(msg=str(exc))
            path = make_record_path(os.path.abspath(p["build_root"]), p["board"], version)
        self.record_path = path
        # <build_root>/kiln/<board>/<version>/build-record.json
        self.build_root = os.path.abspath(p["build_root"]) if p["build_root"] else os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.dirname(path))))
        state = os.path.dirname(path)
        self.log_path = os.path.join(state, "logs", "publish_%s.log" % re.sub(r"[^A-Za-z0-9_.-]", "_", p["target_name"]))
        self.stage_name = "publish:" + p["target_name"]
        self.runner = Runner(self.module, log_path=self.log_path, fail_extra={"record_path": path},
                             on_failure=self._on_failure)
        try:
            with BuildRecord.open(path, create=False, read_only=True) as record:
                self.data = record.data
        except RecordError as exc:
            self.module.fail_json(msg=str(exc), record_path=path)
        self.board = self.data.get("board")
        self.version = (self.data.get("version") or {}).get("FLATCAR_VERSION")
        if p["board"] and p["board"] != self.board:
            self.module.fail_json(msg="build record %s is for board %s, not %s" % (path, self.board, p["board"]))
        if not self.version:
            self.module.fail_json(msg="build record %s has no version.FLATCAR_VERSION: it was not written by kiln's build stages" % path)
        if p["version"]:
            try:
                wanted = FlatcarVersion.parse(p["version"]).version
            except VersionError as exc:
                self.module.fail_json(msg=str(exc))
            if wanted != self.version:
                self.module.fail_json(msg="build record %s is for version %s, not %s" % (path, self.version, wanted))
        self.tmp = tempfile.mkdtemp(prefix="kiln-publish-")
        os.chmod(self.tmp, 0o700)

    def cleanup(self):
        if self.tmp and os.path.isdir(self.tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _on_failure(self, msg, payload):
        self.cleanup()
        if self.p["mode"] != "publish" or self.module.check_mode or not self.p["record_publish"]:
            return
        try:
            with BuildRecord.open(self.record_path, create=False) as record:
                if record.stage(self.stage_name) and record.stage(self.stage_name).get("status") == "running":
                    record.fail(self.stage_name, msg)
        except RecordError:
            pass

    def fail(self, msg, **extra):
        self.runner.fail(msg, **extra)

    # -- the manifest --------------------------------------------------------------------------
    def stage_names(self):
        names = []
        for name in self.data.get("stage_order", []):
            if any(fnmatch.fnmatchcase(name, pat) for pat in self.p["stages"]):
                names.append(name)
        return names

    def _selected(self, name):
        base = base_name(name)
        if not any(fnmatch.fnmatchcase(n, pat) for pat in self.p["include"] for n in (name, base)):
            return False
        if any(fnmatch.fnmatchcase(n, pat) for pat in self.p["exclude"] for n in (name, base)):
            return False
        return True

    def build_manifest(self):
        stages = self.data.get("stages", {})
        by_key = {}
        for sname in self.stage_names():
            stage = stages.get(sname) or {}
            if stage.get("status") != "passed":
                continue
            for out in stage.get("outputs", []):
                name = os.path.basename(out["path"])
                if not self._selected(name):
                    continue
                base_role = role_of(base_name(name))
                area = "update" if base_role in PAYLOAD_ROLES else "release"
                entry = {
                    "name": name, "area": area, "size": int(out["size"]), "sha256": out["sha256"],
                    "role": out.get("role") or role_of(name), "stage": sname,
                    "source": os.path.join(self.build_root, out["path"]), "rel": out["path"],
                }
                key = (area, name)
                if key in by_key:
                    if by_key[key]["sha256"] != entry["sha256"]:
                        self.fail("stages %s and %s both record %s with different content: publish one of them (option stages/exclude)"
                                  % (by_key[key]["stage"], sname, name))
                    continue
                by_key[key] = entry
        files = list(by_key.values())
        if not any(f["area"] == "release" and f["role"] == "generic_image" for f in files) and not any(
                f["area"] == "release" for f in files):
            self.fail("build record %s has nothing to publish for stages %s: run the build stages first"
                      % (self.record_path, ", ".join(self.p["stages"])))
        if self.p["verify_source"] and self.p["mode"] == "publish":
            problems = []
            for f in files:
                try:
                    st = os.stat(f["source"])
                except OSError:
                    problems.append("%s is missing" % f["rel"])
                    continue
                if st.st_size != f["size"]:
                    problems.append("%s changed size since stage %s" % (f["rel"], f["stage"]))
                elif file_sha256(f["source"]) != f["sha256"]:
                    problems.append("%s changed content since stage %s" % (f["rel"], f["stage"]))
            if problems:
                self.fail("source files differ from the build record: %s; rerun the stages that wrote them"
                          % "; ".join(problems[:5]))
        # The payload stage's own hashes (details.payloads[] from kiln.flatcar.update_payload, or a flat
        # details.sha256_hex for the main payload) must agree with the files about to be published.
        pdetails = (stages.get("payload") or {}).get("details") or {}
        want = dict((pl.get("name"), pl.get("sha256_hex")) for pl in pdetails.get("payloads") or [] if isinstance(pl, dict))
        if pdetails.get("sha256_hex"):
            want.setdefault("flatcar_production_update.gz", pdetails["sha256_hex"])
        for f in files:
            if f["area"] == "update" and want.get(f["name"]) and want[f["name"]] != f["sha256"]:
                self.fail("payload stage records sha256 %s for %s but the file has %s: rerun the payload stage"
                          % (want[f["name"]], f["name"], f["sha256"]))
        # Generated files: .sha256 for payloads (flatcar-update), version.txt when the record has none.
        names = set((f["area"], f["name"]) for f in files)
        for f in list(files):
            if f["area"] == "update" and role_of(f["name"]) in PAYLOAD_ROLES and ("update", f["name"] + ".sha256") not in names:
                self._generated(files, "update", f["name"] + ".sha256", "%s  %s\n" % (f["sha256"], f["name"]))
        if ("release", "version.txt") not in names:
            v = self.data.get("version") or {}
            lines = ["FLATCAR_VERSION=%s" % v.get("FLATCAR_VERSION"), "FLATCAR_VERSION_ID=%s" % v.get("FLATCAR_VERSION_ID", ""),
                     'FLATCAR_BUILD_ID="%s"' % v.get("FLATCAR_BUILD_ID", "")]
            if v.get("FLATCAR_SDK_VERSION"):
                lines.append("FLATCAR_SDK_VERSION=%s" % v["FLATCAR_SDK_VERSION"])
            self._generated(files, "release", "version.txt", "\n".join(lines) + "\n")
        files.sort(key=lambda f: (f["area"], f["name"]))
        self.files = files

    def _generated(self, files, area, name, text):
        directory = os.path.join(self.tmp, "gen", area)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        data = text.encode("utf-8")
        with open(path, "wb") as fh:
            fh.write(data)
        files.append({"name": name, "area": area, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "role": role_of(name), "stage": "generated", "source": path, "rel": None})

    # -- the gate ------------------------------------------------------------------------------
    def check_gate(self):
        p = self.p
        stages = self.data.get("stages", {})
        problems = []
        boot_ok = []
        for name in self.data.get("stage_order", []):
            st = stages.get(name) or {}
            if name.startswith("boot_check:") and st.get("status") == "passed" and (st.get("details") or {}).get("verdict") == "passed":
                boot_ok.append(name)
        if p["require_boot_check"]:
            if p["boot_check_stages"]:
                for name in p["boot_check_stages"]:
                    if name not in boot_ok:
                        problems.append("%s has not passed (needs status passed and details.verdict == passed)" % name)
            elif not boot_ok:
                problems.append("no passed boot check (a stage boot_check:<firmware> with details.verdict == passed)")
        sig_count = 0
        if p["require_signatures"]:
            sign = stages.get("sign") or {}
            if sign.get("status") != "passed":
                problems.append("stage sign has not passed")
            sigs = dict((f["name"], f) for f in self.files if f["area"] == "release" and f["name"].endswith(".sig"))
            needing = [f for f in self.files if f["area"] == "release" and f["role"] in SIGNED_ROLES
                       and base_name(f["name"]) == f["name"]]
            missing = []
            wrong_stage = []
            for f in needing:
                sig = sigs.get(f["name"] + ".sig")
                if not sig:
                    missing.append(f["name"])
                elif sig["stage"] != "sign":
                    wrong_stage.append(sig["name"])
            if missing:
                problems.append("no signature (.sig from stage sign) for %s" % ", ".join(missing))
            if wrong_stage:
                problems.append("signatures not recorded by stage sign: %s" % ", ".join(wrong_stage))
            if p["signing_key"] and not missing:
                bad = self.gpg_verify([(sigs[f["name"] + ".sig"], f) for f in needing])
                problems.extend(bad)
            sig_count = len(needing) - len(missing)
        self.gate = {"passed": not problems, "overridden": False, "reason": None, "problems": problems,
                     "boot_checks": boot_ok, "signatures": sig_count}
        if problems:
            if not p["gate_override"]:
                self.fail("publish gate refused %s %s: %s; fix the build or set gate_override with gate_override_reason"
                          % (self.board, self.version, "; ".join(problems)), gate=self.gate)
            if not (p["gate_override_reason"] or "").strip():
                self.fail("gate_override needs gate_override_reason: say why this build may be published without %s"
                          % "; ".join(problems), gate=self.gate)
            self.gate["overridden"] = True
            self.gate["reason"] = p["gate_override_reason"].strip()
            self.runner.note("GATE OVERRIDDEN (%s): %s" % (self.gate["reason"], "; ".join(problems)))
            self.module.warn("publish gate overridden for %s %s (%s): %s"
                             % (self.board, self.version, self.gate["reason"], "; ".join(problems)))

    def gpg_verify(self, pairs):
        gpg = which(self.module, "gpg", required=True, msg="gpg not found on the source host: install gnupg or drop signing_key")
        home = os.path.join(self.tmp, "gnupg")
        os.makedirs(home, mode=0o700)
        self.runner.run([gpg, "--batch", "--homedir", home, "--import", self.p["signing_key"]],
                        msg="cannot import signing_key %s into a temporary keyring" % self.p["signing_key"])
        problems = []
        for sig, f in pairs:
            res = self.runner.run([gpg, "--batch", "--homedir", home, "--verify", sig["source"], f["source"]], check=False)
            if res.rc != 0:
                problems.append("%s does not verify with signing_key (gpg rc=%d)" % (sig["name"], res.rc))
        gpgconf = which(self.module, "gpgconf")
        if gpgconf:
            self.runner.run([gpgconf, "--homedir", home, "--kill", "all"], check=False)
        return problems

    # -- layout ---------------------------------------------------------------------------------
    def layout(self, sep_join):
        base = self.p["base"]
        update_base = self.p["update_base"] or sep_join(base, "update")
        self.board_dir = sep_join(base, self.board)
        self.release_final = sep_join(base, self.board, self.version)
        self.release_staging = sep_join(base, self.board, STAGING_PREFIX + self.version)
        self.update_board_dir = sep_join(update_base, self.board)
        self.update_final = sep_join(update_base, self.board, self.version)
        self.update_staging = sep_join(update_base, self.board, STAGING_PREFIX + self.version)

    def spec(self, **extra):
        areas = {"release": {"final": self.release_final, "staging": self.release_staging}}
        if any(f["area"] == "update" for f in self.files):
            areas["update"] = {"final": self.update_final, "staging": self.update_staging}
        spec = {"board_dir": self.board_dir, "areas": areas,
                "files": [dict((k, f[k]) for k in ("name", "area", "size", "sha256")) for f in self.files]}
        spec.update(extra)
        return spec

    # -- the run ----------------------------------------------------------------------------------
    def run(self, backend):
        p = self.p
        self.build_manifest()
        result = {"board": self.board, "version": self.version, "backend": p["backend"], "record_path": self.record_path,
                  "log_path": self.log_path, "stage": self.stage_name}
        has_update = any(f["area"] == "update" for f in self.files)
        result["release_path"] = self.release_final
        result["update_path"] = self.update_final if has_update else None
        if p["public_url"]:
            result["release_url"] = p["public_url"].rstrip("/") + "/%s/%s/" % (self.board, self.version)
        if p["update_public_url"] and has_update:
            result["update_url"] = p["update_public_url"].rstrip("/") + "/%s/%s/" % (self.board, self.version)
        elif p["public_url"] and has_update and not p["update_base"]:
            result["update_url"] = p["public_url"].rstrip("/") + "/update/%s/%s/" % (self.board, self.version)

        if p["mode"] == "verify":
            self.runner.note("verify %s %s on %s" % (self.board, self.version, backend.describe()))
            ver = backend.verify(self.spec())
            current = {"before": ver.get("current"), "after": ver.get("current"), "changed": False, "reason": "verify only"}
            result.update(changed=False, verify={"checked": ver["checked"], "problems": ver["problems"]},
                          files=self.public_files("present"), current=current)
            if ver["problems"]:
                self.fail("post-publish verify of %s %s found %d problem(s): %s" % (
                    self.board, self.version, len(ver["problems"]), "; ".join(ver["problems"][:5])), verify=result["verify"])
            return result

        self.check_gate()
        result["gate"] = self.gate
        self.runner.note("publish %s %s to %s (%d files)" % (self.board, self.version, backend.describe(), len(self.files)))
        state = backend.inspect(self.spec(prepare=not self.module.check_mode))
        conflicts = []
        pending = []
        for f in self.files:
            area = state["areas"].get(f["area"], {})
            final_state = area.get("final", {}).get(f["name"], "missing") if area.get("final_exists") else "missing"
            if final_state == "ok":
                f["status"] = "present"
            elif final_state == "missing":
                f["status"] = "pending"
                pending.append(f)
            else:
                conflicts.append("%s/%s (%s)" % (f["area"], f["name"], final_state))
        if conflicts:
            self.fail("version uniqueness: %s %s is already published with different %s (changed on the mirror after publishing, "
                      "or another build used the same version); kiln never overwrites a published version: build a new version, "
                      "or remove this one from the mirror by hand if it was never released"
                      % (self.board, self.version, ", ".join(conflicts)))
        current_before = state.get("current")
        move, reason = self.plan_current(current_before, state.get("current_kind"))
        changed = bool(pending) or move
        if self.module.check_mode:
            result.update(changed=changed, files=self.public_files(), uploaded=[],
                          current={"before": current_before, "after": self.version if move else current_before,
                                   "changed": move, "reason": reason},
                          verify={"checked": 0, "problems": []})
            return result
        if pending:
            self.begin_record()
            backend.transfer(pending, state)
            backend.commit(self.spec())
            for f in pending:
                f["status"] = "uploaded"
        ver = backend.verify(self.spec())
        if ver["problems"]:
            self.fail("post-publish verify of %s %s found %d problem(s): %s; current was not moved" % (
                self.board, self.version, len(ver["problems"]), "; ".join(ver["problems"][:5])), verify=ver)
        after = current_before
        if move:
            if not pending:
                self.begin_record()
            moved = backend.set_current(self.version, current_before, self.files)
            after = moved["after"]
            move = moved["changed"]
        result.update(changed=bool(pending) or move, files=self.public_files(), uploaded=[f["name"] for f in pending],
                      current={"before": current_before, "after": after, "changed": move, "reason": reason},
                      verify={"checked": ver["checked"], "problems": []})
        if result["changed"] or self.gate.get("overridden"):
            self.finish_record(result)
        self.runner.note("published %s %s: %d uploaded, current %s -> %s" % (
            self.board, self.version, len(pending), current_before, after))
        return result

    def plan_current(self, before, kind):
        if not self.p["update_current"]:
            return False, "update_current is false"
        if kind == "other":
            self.fail("%s/current exists and is not a kiln-managed pointer: move it aside and rerun" % self.board_dir)
        if not before:
            return True, "no current yet"
        if before == self.version:
            return False, "already current"
        try:
            order = compare(self.version, before)
        except VersionError:
            if self.p["allow_downgrade"]:
                return True, "current pointed at %r (not a Flatcar version); allow_downgrade" % before
            self.fail("%s/current points at %r, which is not a Flatcar version: fix it by hand or set allow_downgrade"
                      % (self.board_dir, before))
        if order > 0:
            return True, "forward from %s" % before
        if self.p["allow_downgrade"]:
            return True, "downgrade from %s (allow_downgrade)" % before
        self.module.warn("%s %s is older than current %s: published, current not moved (set allow_downgrade to move it back)"
                         % (self.board, self.version, before))
        return False, "older than current %s" % before

    def public_files(self, default=None):
        out = []
        for f in self.files:
            out.append({"name": f["name"], "area": f["area"], "size": f["size"], "sha256": f["sha256"], "role": f["role"],
                        "stage": f["stage"], "status": f.get("status") or default or "pending"})
        return out

    # -- build record -----------------------------------------------------------------------------
    def record_inputs(self, backend):
        return {"stage": self.stage_name, "backend": self.p["backend"], "target": backend.describe(),
                "release_path": self.release_final, "update_path": self.update_final,
                "files": sorted((f["area"], f["name"], f["sha256"]) for f in self.files)}

    def begin_record(self):
        if not self.p["record_publish"] or getattr(self, "_begun", False):
            return
        self._begun = True
        inputs = self.record_inputs(self.backend)
        try:
            with BuildRecord.open(self.record_path, create=False) as record:
                record.begin(self.stage_name, inputs, digest(inputs), log_path=self.log_path)
        except RecordError as exc:
            self.fail(str(exc))

    def finish_record(self, result):
        if not self.p["record_publish"]:
            return
        if not getattr(self, "_begun", False):
            self.begin_record()
        details = {"backend": self.p["backend"], "target": self.backend.describe(), "release_path": self.release_final,
                   "update_path": result.get("update_path"), "release_url": result.get("release_url"),
                   "update_url": result.get("update_url"), "uploaded": result.get("uploaded"), "current": result.get("current"),
                   "gate": self.gate, "files": len(self.files)}
        try:
            with BuildRecord.open(self.record_path, create=False) as record:
                record.finish(self.stage_name, [], details)
        except RecordError as exc:
            self.module.warn("published, but the build record could not be updated: %s" % exc)


# -- backends -------------------------------------------------------------------------------------
class LocalBackend:
    """A mirror directory on this host."""

    def __init__(self, pub):
        self.pub = pub
        self.module = pub.module
        base = pub.p["base"]
        if not os.path.isabs(base):
            self.module.fail_json(msg="base must be an absolute directory for backend %s, not %r" % (pub.p["backend"], base))
        pub.layout(os.path.join)

    def describe(self):
        return "local:%s" % self.pub.p["base"]

    def op(self, name, spec):
        self.pub.runner.note("mirror op %s" % name)
        try:
            return run_op(name, spec)
        except MirrorError as exc:
            self.pub.fail(str(exc))

    def inspect(self, spec):
        return self.op("inspect", spec)

    def transfer(self, pending, state):
        for f in pending:
            staging = self.pub.release_staging if f["area"] == "release" else self.pub.update_staging
            dst = os.path.join(staging, f["name"])
            try:
                if os.path.isfile(dst) and os.path.getsize(dst) == f["size"]:
                    continue  # commit hashes it
                tmp = os.path.join(staging, ".%s.kiln-tmp" % f["name"])
                shutil.copyfile(f["source"], tmp)
                os.chmod(tmp, 0o644)
                os.rename(tmp, dst)
            except OSError as exc:
                self.pub.fail("cannot copy %s to %s: %s" % (f["source"], staging, exc.strerror or exc))

    def commit(self, spec):
        return self.op("commit", spec)

    def verify(self, spec):
        return self.op("verify", spec)

    def set_current(self, version, expect, files):
        return self.op("set_current", {"board_dir": self.pub.board_dir, "target": version, "expect": expect})


class DirBackend(LocalBackend):
    """A mirror directory on another host: rsync over SSH from this host, helper ops over SSH."""

    def __init__(self, pub):
        LocalBackend.__init__(self, pub)
        p = pub.p
        if not p["mirror_host"]:
            self.module.fail_json(msg="backend dir needs mirror_host (use backend local when the mirror is this host)")
        self.dest = ("%s@%s" % (p["mirror_user"], p["mirror_host"])) if p["mirror_user"] else p["mirror_host"]
        self.ssh = which(self.module, "ssh", required=True, msg="ssh not found on the source host: install openssh-client")
        self.rsync = p["rsync_executable"] or which(
            self.module, "rsync", required=True, msg="rsync not found on the source host: install rsync")
        key = p["ssh_private_key_file"]
        if p["ssh_private_key"]:
            key = os.path.join(pub.tmp, "ssh_key")
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(p["ssh_private_key"].rstrip("\n") + "\n")
        opts = ["-p", str(p["mirror_port"]), "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                "-o", "StrictHostKeyChecking=%s" % p["ssh_host_key_checking"]]
        if p["ssh_known_hosts_file"]:
            opts += ["-o", "UserKnownHostsFile=%s" % p["ssh_known_hosts_file"]]
        if key:
            opts += ["-i", key, "-o", "IdentitiesOnly=yes"]
        opts += list(p["ssh_extra_args"])
        self.ssh_opts = opts
        self.source = own_source()

    def describe(self):
        return "%s:%s" % (self.dest, self.pub.p["base"])

    def op(self, name, spec):
        runner = self.pub.runner
        runner.note("mirror op %s on %s" % (name, self.dest))
        argv = [self.ssh] + self.ssh_opts + ["--", self.dest, self.pub.p["remote_python"], "-"]
        rc, out, err = runner.capture(argv, data=remote_script(name, spec, self.source))
        reply = parse_remote_output(out)
        if reply is None:
            detail = (err or out or "").strip().splitlines()
            runner.note("ssh rc=%d: %s" % (rc, " | ".join(detail[-5:])))
            self.pub.fail("cannot run the mirror helper on %s (ssh rc=%d): %s" % (
                self.dest, rc, detail[-1] if detail else "no output; is python3 installed there?"), rc=rc, cmd=argv[:-2] + ["python3", "-"])
        if not reply.get("ok"):
            self.pub.fail(reply.get("error") or "mirror helper failed", rc=rc)
        return reply["result"]

    def transfer(self, pending, state):
        xfer = os.path.join(self.pub.tmp, "xfer")
        for area in ("update", "release"):
            files = [f for f in pending if f["area"] == area]
            if not files:
                continue
            src = os.path.join(xfer, area)
            os.makedirs(src)
            for f in files:
                os.symlink(os.path.abspath(f["source"]), os.path.join(src, f["name"]))
            staging = self.pub.release_staging if area == "release" else self.pub.update_staging
            ssh_cmd = " ".join(_shell_quote(a) for a in [self.ssh] + self.ssh_opts)
            argv = [self.rsync, "-rtpL", "--chmod=D0755,F0644", "--partial-dir=" + PARTIAL_DIR, "--protect-args",
                    "-e", ssh_cmd, "--rsync-path=" + self.pub.p["remote_rsync_path"]]
            argv += list(self.pub.p["rsync_extra_args"]) + ["--", src + "/", "%s:%s/" % (self.dest, staging)]
            self.pub.runner.run(argv, msg="rsync of %d %s file(s) to %s failed; nothing was made visible, rerun to resume"
                                % (len(files), area, self.dest))


def _shell_quote(arg):
    if re.match(r"^[A-Za-z0-9_./=:@%+,-]+$", arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


class S3Backend:
    """An S3-compatible bucket. Keys mirror the directory layout."""

    def __init__(self, pub):
        self.pub = pub
        self.module = pub.module
        p = pub.p
        if boto3 is None:
            self.module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO_IMPORT_ERROR)
        if not p["bucket"]:
            self.module.fail_json(msg="backend s3 needs bucket")
        self.bucket = p["bucket"]
        style = p["s3_addressing_style"] or ("path" if p["endpoint_url"] else "auto")
        cfg = botocore.config.Config(s3={"addressing_style": style}, retries={"max_attempts": 5, "mode": "standard"})
        kwargs = {"region_name": p["region"], "config": cfg, "verify": p["validate_certs"]}
        if p["endpoint_url"]:
            kwargs["endpoint_url"] = p["endpoint_url"]
        if p["access_key"]:
            kwargs["aws_access_key_id"] = p["access_key"]
            kwargs["aws_secret_access_key"] = p["secret_key"]
        if p["session_token"]:
            kwargs["aws_session_token"] = p["session_token"]
        try:
            self.s3 = boto3.client("s3", **kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            self.module.fail_json(msg="cannot create the S3 client: %s" % " ".join(str(exc).split()))
        pub.layout(join_key)
        self.content = p["s3_verify"] == "content"

    def describe(self):
        return "s3://%s/%s" % (self.bucket, self.pub.p["base"].strip("/"))

    def _err(self, what, exc):
        self.pub.fail("%s failed on s3://%s: %s" % (what, self.bucket, " ".join(str(exc).split())))

    def key(self, kind, f):
        area_final = self.pub.release_final if f["area"] == "release" else self.pub.update_final
        area_staging = self.pub.release_staging if f["area"] == "release" else self.pub.update_staging
        return join_key(area_final if kind == "final" else area_staging, f["name"])

    def head(self, key):
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            self._err("HEAD %s" % key, exc)
        except botocore.exceptions.BotoCoreError as exc:
            self._err("HEAD %s" % key, exc)

    def object_sha256(self, key):
        h = hashlib.sha256()
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in iter(lambda: body.read(1024 * 1024), b""):
                h.update(chunk)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            self._err("GET %s" % key, exc)
        return h.hexdigest()

    def check(self, key, f, content=None):
        head = self.head(key)
        if head is None:
            return "missing"
        if int(head.get("ContentLength", -1)) != f["size"]:
            return "size"
        meta = (head.get("Metadata") or {}).get("sha256")
        if meta and meta != f["sha256"]:
            return "sha256"
        if (self.content if content is None else content) or not meta:
            if self.object_sha256(key) != f["sha256"]:
                return "sha256"
        return "ok"

    def read_current(self):
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=join_key(self.pub.board_dir, "current"))
            text = obj["Body"].read().decode("utf-8", "replace").strip()
            return text or None
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            self._err("GET current", exc)
        except botocore.exceptions.BotoCoreError as exc:
            self._err("GET current", exc)

    def inspect(self, spec):
        areas = {}
        for f in self.pub.files:
            area = areas.setdefault(f["area"], {"final_exists": True, "final": {}, "staging": {}, "extra": []})
            area["final"][f["name"]] = self.check(self.key("final", f), f)
        current = self.read_current()
        if current and not re.match(r"^[A-Za-z0-9._+-]+$", current):
            return {"areas": areas, "current": current, "current_kind": "other"}
        return {"areas": areas, "current": current, "current_kind": "symlink" if current else "missing"}

    def transfer(self, pending, state):
        for f in pending:
            key = self.key("staging", f)
            head = self.head(key)
            if head is not None and int(head.get("ContentLength", -1)) == f["size"] and (
                    head.get("Metadata") or {}).get("sha256") == f["sha256"]:
                continue
            self.pub.runner.note("upload %s -> s3://%s/%s" % (f["name"], self.bucket, key))
            try:
                self.s3.upload_file(f["source"], self.bucket, key,
                                    ExtraArgs={"Metadata": {"sha256": f["sha256"]}, "ContentType": content_type(f["name"])})
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, boto3.exceptions.S3UploadFailedError,
                    OSError) as exc:
                self.pub.fail("upload of %s to s3://%s/%s failed: %s; nothing was made visible, rerun to resume"
                              % (f["name"], self.bucket, key, " ".join(str(exc).split())))

    def commit(self, spec):
        pending = [f for f in self.pub.files if f.get("status") == "pending"]
        bad = [f["name"] for f in pending if self.check(self.key("staging", f), f, content=True) != "ok"]
        if bad:
            for f in pending:
                if f["name"] in bad:
                    self._delete(self.key("staging", f))
            self.pub.fail("staged objects do not match the build record: %s; nothing was made visible, rerun to send them again"
                          % ", ".join(bad))
        ordered = [f for f in pending if f["area"] == "update"] + [f for f in pending if f["area"] == "release" and f["name"] != "version.txt"] + [
            f for f in pending if f["area"] == "release" and f["name"] == "version.txt"]
        for f in ordered:
            src = self.key("staging", f)
            dst = self.key("final", f)
            if self.head(dst) is not None:
                self.pub.fail("version uniqueness: s3://%s/%s appeared while publishing: rerun" % (self.bucket, dst))
            try:
                self.s3.copy({"Bucket": self.bucket, "Key": src}, self.bucket, dst,
                             ExtraArgs={"MetadataDirective": "COPY"})
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                self._err("copy %s -> %s" % (src, dst), exc)
            if self.check(dst, f, content=False) != "ok":
                self.pub.fail("s3://%s/%s does not match the build record after the copy" % (self.bucket, dst))
        for f in ordered:
            self._delete(self.key("staging", f))
        return {}

    def _delete(self, key):
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            self._err("DELETE %s" % key, exc)

    def verify(self, spec):
        problems = []
        for f in self.pub.files:
            state = self.check(self.key("final", f), f)
            if state != "ok":
                problems.append("s3://%s/%s: %s" % (self.bucket, self.key("final", f), {
                    "sha256": "content differs from the build record", "size": "size differs from the build record"}.get(state, state)))
        return {"checked": len(self.pub.files), "problems": problems, "current": self.read_current()}

    def set_current(self, version, expect, files):
        now = self.read_current()
        if now != expect:
            self.pub.fail("s3://%s/%s/current changed while publishing (now %s, expected %s): rerun"
                          % (self.bucket, self.pub.board_dir, now, expect))
        vt = next((f for f in files if f["area"] == "release" and f["name"] == "version.txt"), None)
        try:
            if vt is not None:
                with open(vt["source"], "rb") as fh:
                    body = fh.read()
                self.s3.put_object(Bucket=self.bucket, Key=join_key(self.pub.board_dir, "current", "version.txt"), Body=body,
                                   ContentType="text/plain", CacheControl="no-cache",
                                   Metadata={"sha256": hashlib.sha256(body).hexdigest()})
            self.s3.put_object(Bucket=self.bucket, Key=join_key(self.pub.board_dir, "current"), Body=(version + "\n").encode(),
                               ContentType="text/plain", CacheControl="no-cache")
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            self._err("writing current", exc)
        return {"before": expect, "after": version, "changed": True}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type="str", choices=["publish", "verify"], default="publish"),
            backend=dict(type="str", choices=["dir", "local", "s3"], required=True),
            record_path=dict(type="path"),
            build_root=dict(type="path"),
            board=dict(type="str", choices=["amd64-usr", "arm64-usr"]),
            version=dict(type="str"),
            base=dict(type="str", required=True),
            update_base=dict(type="str"),
            stages=dict(type="list", elements="str", default=["image", "vm_image:*", "sysext:*", "sign", "payload"]),
            include=dict(type="list", elements="str", default=["*"]),
            exclude=dict(type="list", elements="str", default=["flatcar_test_update*"]),
            update_current=dict(type="bool", default=True),
            allow_downgrade=dict(type="bool", default=False),
            require_boot_check=dict(type="bool", default=True),
            boot_check_stages=dict(type="list", elements="str", default=[]),
            require_signatures=dict(type="bool", default=True),
            signing_key=dict(type="path"),
            gate_override=dict(type="bool", default=False),
            gate_override_reason=dict(type="str"),
            target_name=dict(type="str", default="mirror"),
            record_publish=dict(type="bool", default=True),
            public_url=dict(type="str"),
            update_public_url=dict(type="str"),
            mirror_host=dict(type="str"),
            mirror_user=dict(type="str"),
            mirror_port=dict(type="int", default=22),
            ssh_private_key_file=dict(type="path"),
            ssh_private_key=dict(type="str", no_log=True),
            ssh_known_hosts_file=dict(type="path"),
            ssh_host_key_checking=dict(type="str", choices=["yes", "accept-new", "no"], default="accept-new"),
            ssh_extra_args=dict(type="list", elements="str", default=[]),
            rsync_executable=dict(type="path"),
            rsync_extra_args=dict(type="list", elements="str", default=[]),
            remote_rsync_path=dict(type="str", default="rsync"),
            remote_python=dict(type="str", default="python3"),
            bucket=dict(type="str"),
            endpoint_url=dict(type="str"),
            region=dict(type="str", default="us-east-1"),
            access_key=dict(type="str", no_log=True),
            secret_key=dict(type="str", no_log=True),
            session_token=dict(type="str", no_log=True),
            s3_addressing_style=dict(type="str", choices=["auto", "path", "virtual"]),
            s3_verify=dict(type="str", choices=["content", "metadata"], default="content"),
            validate_certs=dict(type="bool", default=True),
            verify_source=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("ssh_private_key", "ssh_private_key_file")],
        required_if=[("backend", "s3", ("bucket",)), ("backend", "dir", ("mirror_host",))],
        required_together=[("access_key", "secret_key")],
        supports_check_mode=True,
    )
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", module.params["target_name"]):
        module.fail_json(msg="target_name %r: use letters, digits, '.', '_' and '-'" % module.params["target_name"])
    pub = Publisher(module)
    pub.locate_record()
    try:
        backend_cls = {"dir": DirBackend, "local": LocalBackend, "s3": S3Backend}[module.params["backend"]]
        pub.backend = backend_cls(pub)
        result = pub.run(pub.backend)
    finally:
        pub.cleanup()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
