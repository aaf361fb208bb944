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
    A failed or interrupted publish removes its staging directory when it is empty (what was already sent stays for the
    resume); empty ones of other versions go with the next publish once they are an hour old.
  - Backend C(dir) reaches the mirror host over SSH. C(rsync) runs B(on the source host) straight to the mirror host;
    nothing goes through the Ansible controller. The mirror host needs C(python3) and C(rsync).
    Backend C(local) publishes to a directory on the same host. Backend C(s3) uploads with boto3 to any
    S3-compatible endpoint (O(endpoint_url)); there C(current) is a small object rewritten last, next to
    C(current/version.txt).
  - Build-record values are untrusted. C(board) must be a known board, C(version.FLATCAR_VERSION) a canonical
    Flatcar version, and every output path relative, without C(..), resolving inside the build root, with a
    recorded size and sha256; anything else fails with one line before anything is sent.
  - A rerun skips every file already published with the recorded size and sha256. A file already published under the
    same version with other content is an error ("version uniqueness"), never an overwrite.
  - O(mode=verify) only checks a published version against the build record (tamper detection).
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
  - kiln.flatcar._common
  - kiln.flatcar._common.record
  - kiln.flatcar._common.board
  - kiln.flatcar._common.version
  - kiln.flatcar._ssh
  - kiln.flatcar._ssh.remote
attributes:
  check_mode:
    support: full
    details: Check mode writes nothing on the source host or the mirror (no log, no record lock, no staging).
  diff_mode:
    support: full
    details: The diff shows C(<base>/<board>/current) and this version's files on the mirror before and after.
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
  board:
    description: Board of the build, used with O(build_root) and O(version) to find the record.
  version:
    description: FLATCAR_VERSION of the build, used with O(build_root) and O(board) to find the record.
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
    description: Mirror host for V(dir) (name or address as seen from the source host; may not start with C(-)).
    type: str
  ssh_user:
    description:
      - SSH user on the mirror host. The alias O(mirror_user) is deprecated and will be removed in 2.0.0.
    aliases: [mirror_user]
  ssh_port:
    description:
      - SSH port of the mirror host. The alias O(mirror_port) is deprecated and will be removed in 2.0.0.
    aliases: [mirror_port]
  ssh_host_key_checking:
    default: accept-new
  rsync_executable:
    description: rsync on the source host (default from PATH).
    type: path
  rsync_extra_args:
    description: Extra rsync arguments (e.g. V(--bwlimit=50m), V(--compress)).
    type: list
    elements: str
    default: []
  rsync_path:
    description:
      - The alias O(remote_rsync_path) is deprecated and will be removed in 2.0.0.
    aliases: [remote_rsync_path]
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
  - ssh-agent and ssh-add on the source host (only with O(ssh_private_key))
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
    ssh_user: kiln-publish
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
diff:
  description:
    - In diff mode (O(mode=publish)), C(before) and C(after) each hold C(current) (the version it points at),
      C(version) and C(files) (C(<area>/<name>) of this version's files on the mirror).
  returned: diff mode
  type: dict
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
  description: Log of this publish on the source host (C(<record dir>/logs/publish_<target_name>.log)); null in check mode.
  returned: always
  type: str
stage:
  description: Build-record stage written (C(publish:<target_name>)).
  returned: success
  type: str
"""


import os
import shutil
import tempfile

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import (
    SSH_MUTUALLY_EXCLUSIVE,
    board_args,
    deprecated,
    record_args,
    remote_args,
    renamed,
    ssh_args,
    version_args,
)
from ansible_collections.kiln.flatcar.plugins.module_utils._pub_backends import select
from ansible_collections.kiln.flatcar.plugins.module_utils._pub_gate import apply_override, evaluate, gpg_problems
from ansible_collections.kiln.flatcar.plugins.module_utils._pub_manifest import (
    PublishError, build_manifest, check_sources, locate_record, release_of,
)
from ansible_collections.kiln.flatcar.plugins.module_utils._record import RecordError
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import Runner, which
from ansible_collections.kiln.flatcar.plugins.module_utils._safety import ExitCleanup
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import Stage
from ansible_collections.kiln.flatcar.plugins.module_utils._version import VersionError, compare


class Publisher:
    """One publish (or verify) run: record -> manifest -> gate -> backend, and the build-record stage.

    The record is opened once, by one _stage.Stage (``with pub.stage:`` in main): a publish that records its
    stage holds the record's lock from the start to finish; verify, record_publish=false and check mode read it
    only. Every failure while the stage holds the record marks it failed (docs/design.md "The stage cycle")."""

    def __init__(self, module, cleanup):
        self.module = module
        self.p = module.params
        self.check = module.check_mode
        self.stage_name = "publish:" + self.p["target_name"]
        self.backend = None
        self.prepared = False
        self.gate = {}
        self.release = None
        self.runner = None
        self.log_path = None
        self.tmp = tempfile.mkdtemp(prefix="kiln-publish-")
        cleanup.add(lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        os.chmod(self.tmp, 0o700)
        p = self.p
        try:
            location = locate_record(p["record_path"], p["build_root"], p["board"], p["version"])
        except PublishError as exc:
            module.fail_json(msg=str(exc), **exc.extra)
        self.record_path, self.build_root = location.record_path, location.build_root
        self.stage = Stage(module, self.stage_name, location, writes=p["mode"] == "publish" and p["record_publish"])

    def load(self):
        """Validate the record the stage opened, then make the runner (a wrong or damaged record is refused
        before any log directory is made, and is not written to)."""
        p = self.p
        try:
            self.release = release_of(self.stage.record.data, self.record_path, self.build_root, p["board"], p["version"])
        except PublishError as exc:
            self.stage.close()
            self.module.fail_json(msg=str(exc), **dict({"record_path": self.record_path}, **exc.extra))
        if self.check:
            # Check mode writes nothing next to the record: the log lives in the private temp dir.
            self.log_path, log = None, os.path.join(self.tmp, "publish.log")
        else:
            self.log_path = log = self.stage.log_path  # <state dir>/logs/publish_<target>.log
        self.runner = Runner(self.module, log_path=log, fail_extra={"record_path": self.record_path, "log_path": self.log_path},
                             on_failure=self._on_failure)

    def _on_failure(self, _msg, _payload):
        """Before a runner failure (the stage, when it holds the record, records it itself)."""
        self.discard_leftovers()

    def discard_leftovers(self):
        """No empty staging directory left behind, on any way out (failure, exception, signal; both backends).

        Only empty directories go (rmdir): what a transfer already sent stays for the resume. A remote receiver that is
        still saving a partial file keeps its staging directory non-empty, so it is never pulled from under it."""
        if self.prepared and self.backend is not None:
            self.prepared = False  # once
            try:
                self.backend.discard_empty()
            except Exception:  # pylint: disable=broad-except
                pass  # cleanup must never hide the failure that got us here

    # -- the run ----------------------------------------------------------------------------------
    def run(self, cleanup):
        p = self.p
        rel = self.release
        files = build_manifest(rel, p["stages"], p["include"], p["exclude"], os.path.join(self.tmp, "gen"))
        if p["verify_source"] and p["mode"] == "publish":
            check_sources(files)
        backend_cls = select(p["backend"])
        self.layout = backend_cls.make_layout(p, rel.board, rel.version, files)
        self.backend = backend_cls(self.layout, p, self.runner, self.tmp)
        cleanup.add(self.backend.close)
        cleanup.add(self.discard_leftovers)  # runs before close (newest first): an ssh-agent is still there
        self.backend.open()
        result = {"board": rel.board, "version": rel.version, "backend": p["backend"], "record_path": self.record_path,
                  "log_path": self.log_path, "stage": self.stage_name, "release_path": self.layout.release_final,
                  "update_path": self.layout.update_final if self.layout.has_update else None}
        result.update(self.urls())
        if p["mode"] == "verify":
            return self.verify_only(result)
        return self.publish(result)

    def urls(self):
        p, rel, out = self.p, self.release, {}
        tail = "%s/%s/" % (rel.board, rel.version)
        if p["public_url"]:
            out["release_url"] = p["public_url"].rstrip("/") + "/" + tail
        if p["update_public_url"] and self.layout.has_update:
            out["update_url"] = p["update_public_url"].rstrip("/") + "/" + tail
        elif p["public_url"] and self.layout.has_update and not p["update_base"]:
            out["update_url"] = p["public_url"].rstrip("/") + "/update/" + tail
        return out

    def verify_only(self, result):
        self.runner.note("verify %s %s on %s" % (self.release.board, self.release.version, self.backend.describe()))
        ver = self.backend.verify()
        result.update(changed=False, verify={"checked": ver["checked"], "problems": ver["problems"]},
                      files=[f.public("present") for f in self.layout.files],
                      current={"before": ver.get("current"), "after": ver.get("current"), "changed": False, "reason": "verify only"})
        if ver["problems"]:
            raise PublishError("post-publish verify of %s %s found %d problem(s): %s" % (
                self.release.board, self.release.version, len(ver["problems"]), "; ".join(ver["problems"][:5])), verify=result["verify"])
        return result

    def check_gate(self):
        p, rel = self.p, self.release
        verify = None
        if p["signing_key"]:
            gpg = which(self.module, "gpg", required=True, msg="gpg not found on the source host: install gnupg or drop signing_key")
            gpgconf = which(self.module, "gpgconf") or "gpgconf"

            def verify(pairs):
                return gpg_problems(self.runner, p["signing_key"], self.tmp, pairs, gpg, gpgconf)
        gate = evaluate(rel, self.layout.files, p["require_boot_check"], p["boot_check_stages"], p["require_signatures"], verify)
        self.gate = apply_override(gate, rel, p["gate_override"], p["gate_override_reason"])
        if self.gate["overridden"]:
            problems = "; ".join(self.gate["problems"])
            self.runner.note("GATE OVERRIDDEN (%s): %s" % (self.gate["reason"], problems))
            self.module.warn("publish gate overridden for %s %s (%s): %s" % (rel.board, rel.version, self.gate["reason"], problems))

    def classify(self, state):
        """{(area, name): present|pending} from the mirror's state; version uniqueness is checked here."""
        status, conflicts = {}, []
        for f in self.layout.files:
            area = state["areas"].get(f.area, {})
            final = area.get("final", {}).get(f.name, "missing") if area.get("final_exists") else "missing"
            if final in ("ok", "missing"):
                status[(f.area, f.name)] = "present" if final == "ok" else "pending"
            else:
                conflicts.append("%s/%s (%s)" % (f.area, f.name, final))
        if conflicts:
            raise PublishError("version uniqueness: %s %s is already published with different %s (changed on the mirror after "
                               "publishing, or another build used the same version); kiln never overwrites a published version: "
                               "build a new version, or remove this one from the mirror by hand if it was never released"
                               % (self.release.board, self.release.version, ", ".join(conflicts)))
        return status

    def publish(self, result):
        rel, backend = self.release, self.backend
        self.check_gate()
        result["gate"] = self.gate
        self.runner.note("publish %s %s to %s (%d files)" % (rel.board, rel.version, backend.describe(), len(self.layout.files)))
        state = backend.inspect(prepare=not self.check)
        self.prepared = not self.check
        status = self.classify(state)
        pending = [f for f in self.layout.files if status[(f.area, f.name)] == "pending"]
        before = state.get("current")
        move, reason = self.plan_current(before, state.get("current_kind"))
        after = rel.version if move else before
        checked = 0
        if not self.check:
            if pending:
                self.begin_record()
                backend.transfer(pending)
                backend.commit(pending)
                status.update(((f.area, f.name), "uploaded") for f in pending)
            ver = backend.verify()
            if ver["problems"]:
                raise PublishError("post-publish verify of %s %s found %d problem(s): %s; current was not moved" % (
                    rel.board, rel.version, len(ver["problems"]), "; ".join(ver["problems"][:5])), verify=ver)
            checked = ver["checked"]
            if move:
                self.begin_record()
                moved = backend.set_current(before)
                after, move = moved["after"], moved["changed"]
        result.update(changed=bool(pending) or move, files=[f.public(status[(f.area, f.name)]) for f in self.layout.files],
                      uploaded=[] if self.check else [f.name for f in pending],
                      current={"before": before, "after": after, "changed": move, "reason": reason},
                      verify={"checked": checked, "problems": []})
        if self.module._diff:
            result["diff"] = self.diff(status, before, after)
        self.prepared = False  # committed: staging is gone, nothing to discard
        if not self.check:
            if result["changed"] or self.gate.get("overridden"):
                self.finish_record(result)
            self.runner.note("published %s %s: %d uploaded, current %s -> %s" % (rel.board, rel.version, len(pending), before, after))
        return result

    def diff(self, status, before, after):
        present = ["%s/%s" % (f.area, f.name) for f in self.layout.files if status[(f.area, f.name)] == "present"]
        return {"before_header": self.layout.current, "after_header": self.layout.current,
                "before": {"current": before, "version": self.release.version, "files": present},
                "after": {"current": after, "version": self.release.version, "files": ["%s/%s" % (f.area, f.name) for f in self.layout.files]}}

    def plan_current(self, before, kind):
        p, version = self.p, self.release.version
        if not p["update_current"]:
            return False, "update_current is false"
        if kind == "other":
            raise PublishError("%s exists and is not a kiln-managed pointer: move it aside and rerun" % self.layout.current)
        if not before:
            return True, "no current yet"
        if before == version:
            return False, "already current"
        try:
            order = compare(version, before)
        except VersionError:
            if p["allow_downgrade"]:
                return True, "current pointed at %r (not a Flatcar version); allow_downgrade" % before
            raise PublishError("%s points at %r, which is not a Flatcar version: fix it by hand or set allow_downgrade"
                               % (self.layout.current, before))
        if order > 0:
            return True, "forward from %s" % before
        if p["allow_downgrade"]:
            return True, "downgrade from %s (allow_downgrade)" % before
        self.module.warn("%s %s is older than current %s: published, current not moved (set allow_downgrade to move it back)"
                         % (self.release.board, version, before))
        return False, "older than current %s" % before

    # -- build record -------------------------------------------------------------------------------
    def begin_record(self):
        """Mark the stage running (once, before the first change on the mirror); the record is already locked."""
        if not self.stage.writes or self.stage.begun:
            return
        inputs = {"stage": self.stage_name, "backend": self.p["backend"], "target": self.backend.describe(),
                  "release_path": self.layout.release_final, "update_path": self.layout.update_final,
                  "files": sorted((f.area, f.name, f.sha256) for f in self.layout.files)}
        try:
            self.stage.begin(log_path=self.log_path, inputs=inputs)
        except (RecordError, OSError) as exc:
            raise PublishError("cannot record stage %s in %s: %s" % (self.stage_name, self.record_path, exc))

    def finish_record(self, result):
        """Mark the stage passed and release the record."""
        if not self.stage.writes:
            return
        self.begin_record()
        details = dict((k, result.get(k)) for k in ("backend", "release_path", "update_path", "release_url", "update_url",
                                                    "uploaded", "current"))
        details.update(target=self.backend.describe(), gate=self.gate, files=len(self.layout.files))
        try:
            self.stage.finish([], details)
        except (RecordError, OSError) as exc:
            self.stage.close()
            self.module.warn("published, but the build record could not be updated: %s" % exc)


def main():
    spec = dict(
        mode=dict(type="str", choices=["publish", "verify"], default="publish"),
        backend=dict(type="str", choices=["dir", "local", "s3"], required=True),
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
        rsync_executable=dict(type="path"),
        rsync_extra_args=dict(type="list", elements="str", default=[]),
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
    )
    spec.update(record_args())
    spec.update(board_args())
    spec.update(version_args())
    spec.update(ssh_args(host_key_checking="accept-new"))
    del spec["ssh_options"]  # publish never took -o values as an option
    spec["ssh_user"].update(aliases=["mirror_user"], deprecated_aliases=deprecated("mirror_user"))
    spec["ssh_port"].update(aliases=["mirror_port"], deprecated_aliases=deprecated("mirror_port"))
    spec.update(remote_args())
    renamed(spec, "rsync_path", "remote_rsync_path")
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=SSH_MUTUALLY_EXCLUSIVE,
        required_if=[("backend", "s3", ("bucket",)), ("backend", "dir", ("mirror_host",))],
        required_together=[("access_key", "secret_key")],
        supports_check_mode=True,
    )
    _validate.check(module, _validate.identifier, module.params["target_name"], "target_name")
    for name in ("public_url", "update_public_url"):
        if module.params[name] is not None:
            _validate.check(module, _validate.url, module.params[name], name)
    with ExitCleanup() as cleanup:  # temp dir, ssh-agent: gone on every exit path, SIGTERM included
        pub = Publisher(module, cleanup)
        with pub.stage:  # the record, opened once: any failure or exception in here is one line and unlocks it
            pub.load()
            try:
                result = pub.run(cleanup)
            except PublishError as exc:
                pub.runner.fail(str(exc), **exc.extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
