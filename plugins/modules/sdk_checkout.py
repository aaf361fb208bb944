#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: sdk_checkout
short_description: Check out a Flatcar scripts repository at a tag, branch or commit, apply patches and pin the version
version_added: 0.1.0
description:
  - Clones (or updates) a C(flatcar/scripts) repository, or a fork of it, on the builder and checks out O(ref).
  - For forks, fetches the tags of O(upstream_repo) so that C(git describe --tags) works (Flatcar#1705).
  - Applies O(patches) with C(git am -3 --committer-date-is-author-date), so the same patches on the same base give the same commit.
  - Then applies O(mods) (declared image changes, see C(docs/mods.md)) as one more commit with a fixed author, committer
    and date, so the same mods on the same base give the same commit id; returns the packages that must be rebuilt
    from source (RV(rebuild_atoms)), which M(kiln.flatcar.packages) keeps out of binary package use.
  - Writes C(sdk_container/.repo/manifests/version.txt) once, with a pinned C(FLATCAR_BUILD_ID) (Flatcar#2041).
    Later stages run the SDK with C(run_sdk_container -U) so the file is never rewritten.
  - Never pushes anything.
  - The version is parsed once, here. The result RV(version) (FLATCAR_VERSION, build id, SDK version, channel) is kept in
    C(<scripts_dir>/__build__/images/kiln/checkout.json) and, with O(board), in the build record (RV(record_path)).
    Playbooks pass RV(version.FLATCAR_VERSION) and RV(record_path) on to the later modules instead of deriving them again.
  - Every value from an option is validated before the checkout is touched; git gets user values only after C(--).
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
  - kiln.flatcar._common
  - kiln.flatcar._common.board
  - kiln.flatcar._mods
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: C(before) and C(after) hold the commit and the pinned FLATCAR_VERSION (in check mode the commit O(ref) resolves to
      locally, when it does).
  idempotent:
    support: full
options:
  scripts_dir:
    description:
      - Directory of the scripts checkout on the builder, an absolute path (the O(kiln.flatcar.packages#module:scripts_dir) of every SDK stage).
      - The alias O(dest) is deprecated and will be removed in 2.0.0.
    type: path
    required: true
    aliases: [dest]
  repo:
    description: URL (or local path) of the scripts repository.
    type: str
    default: https://github.com/flatcar/scripts.git
  ref:
    description:
      - Tag, branch or commit to check out, for example V(stable-4593.2.5), V(main) or a commit id (may not start with C(-)).
    type: str
    required: true
  upstream_repo:
    description:
      - A repository whose tags are fetched into the checkout. Set it when O(repo) is a fork without Flatcar's tags.
    type: str
  patches:
    description:
      - Patch files (C(git format-patch) output) on the builder, applied in order with C(git am -3).
    type: list
    elements: path
    default: []
  rebuild_since:
    description:
      - A commit (normally the one a release was built from). RV(rebuild_atoms) is then every package whose ebuild
        directory, user patches, kernel config or profile lines differ between it and the new commit (patches and mods
        alike) instead of the packages the mods touch, so a hotfix rebuilds what changed since the release and no more.
      - Must be present in the checkout (it is fetched with O(ref)).
    type: str
  version:
    description:
      - The OS version to build, e.g. V(stable-4593.2.5), V(4593.2.5+hotfix-1), V(main-4799.0.0-nightly-20260821-2100).
      - Defaults to the version C(git describe --tags) gives for O(ref) (the highest tag pointing at it).
    type: str
  sdk_version:
    description: SDK version to build with. Defaults to C(FLATCAR_SDK_VERSION) of the checked-out version.txt.
    type: str
  build_id:
    description:
      - Build id appended to non-official versions (C(FLATCAR_BUILD_ID)).
      - When the version has none and O(official=false), kiln pins one once (C(kiln-<UTC date>)) and keeps it on reruns.
      - Letters, digits, C(.), C(_), C(+) and C(-), starting with a letter or digit.
    type: str
  official:
    description: Build an official image (empty build id, C(COREOS_OFFICIAL=1)). Needs your own official update key in the image.
    type: bool
    default: false
  binhost:
    description:
      - Root URL of your binary package cache, written (quoted) as C(FLATCAR_DEV_BUILDS) into version.txt.
      - Every C(setup_board), including the C(setup_board --regen_configs) that C(build_packages) runs, then writes
        C(PORTAGE_BINHOST=<binhost>/boards/<board>/<version>/pkgs/) into the board's C(make.conf)
        (C(get_board_binhost) in C(build_library/toolchain_util.sh)); the version is C(FLATCAR_VERSION_ID) unless
        M(kiln.flatcar.packages) passes another one.
      - A URL without whitespace, quotes or shell metacharacters (the SDK sources version.txt as shell), and the cache
        root, not a C(.../pkgs/) URL.
    type: str
  force:
    description: Reset the checkout to O(ref), reapply the patches and rewrite version.txt even when nothing changed.
    type: bool
    default: false
  board:
    description:
      - Board the checkout is built for. With it the module writes the pinned version (and its channel) into that board's
        build record and returns RV(record_path).
notes:
  - Local changes in O(scripts_dir) other than version.txt are refused, never discarded, unless O(force=true).
  - The log of a first clone is written in a private temporary directory and moved to
    C(<scripts_dir>/__build__/images/kiln/logs/checkout.log) once the clone succeeded. When the clone fails it is removed
    (nothing is left beside O(scripts_dir)); the failure result carries git's output as C(log_tail) instead of a C(log_path).
"""

EXAMPLES = r"""
- name: Check out a release and pin the version
  kiln.flatcar.sdk_checkout:
    scripts_dir: /var/lib/kiln/scripts
    ref: stable-4593.2.5
    version: 4593.2.5+hotfix-1
    board: amd64-usr
  register: checkout

- name: Build packages for exactly that version (passed on, not derived again)
  kiln.flatcar.packages:
    scripts_dir: /var/lib/kiln/scripts
    board: amd64-usr
  when: checkout.version.FLATCAR_VERSION is defined

- name: Build a fork with an embargoed fix
  kiln.flatcar.sdk_checkout:
    scripts_dir: /var/lib/kiln/scripts
    repo: https://git.example.com/os/flatcar-scripts.git
    upstream_repo: https://github.com/flatcar/scripts.git
    ref: flatcar-4593
    patches:
      - /var/lib/kiln/patches/0001-fix-cve.patch

- name: Declared image changes (mods), committed deterministically
  kiln.flatcar.sdk_checkout:
    scripts_dir: /var/lib/kiln/scripts
    ref: stable-4593.2.5
    mods:
      - kind: ebuild
        src: /var/lib/kiln/mods/app-misc/hello
        category: app-misc
        image: true
      - kind: kernel_config
        options: ["CONFIG_WIREGUARD=m", "CONFIG_DEBUG_INFO=n"]
      - kind: files
        src: /var/lib/kiln/mods/files/acme
        dest: /usr/share/acme
        name: acme-files
        sysext: acme
  register: checkout
"""

RETURN = r"""
commit:
  description: Commit checked out after the patches.
  returned: success
  type: str
base_commit:
  description: Commit O(ref) resolved to, before the patches.
  returned: success
  type: str
version:
  description: The pinned version.
  returned: success
  type: dict
  contains:
    FLATCAR_VERSION:
      description: OS version, with C(+<build id>) for non-official builds.
      type: str
    FLATCAR_VERSION_ID:
      description: Plain C(MAJOR.MINOR.PATCH).
      type: str
    FLATCAR_BUILD_ID:
      description: Build id, empty for official builds.
      type: str
    FLATCAR_SDK_VERSION:
      description: SDK version.
      type: str
    channel:
      description: C(alpha), C(beta), C(stable), C(lts) or C(developer).
      type: str
    official:
      description: Whether this is an official build.
      type: bool
    docker_vernum:
      description: The version with C(+) replaced by C(-), as used in container tags.
      type: str
versionfile:
  description: Path of version.txt.
  returned: success
  type: str
patches:
  description: Applied patches with their sha256.
  returned: success
  type: list
  elements: dict
mods:
  description: The mods (validated and normalised), each with the C(sha256) of its source; empty without O(mods).
  returned: success
  type: list
  elements: dict
rebuild_atoms:
  description:
    - C(<category>/<name>) of every package the mods touch (ebuild and patch directories, packages named in C(use),
      C(accept_keywords) and C(mask) entries, the kernel packages for C(kernel_config), the generated C(kiln-files/<name>)
      of a C(files) mod, C(coreos-base/coreos) when a package is added to the image). Also kept in the checkout state,
      where M(kiln.flatcar.packages) reads it.
  returned: success
  type: list
  elements: str
sysext_packages:
  description: For each sysext name given by an C(ebuild) or C(files) mod's C(sysext), the packages to pass to M(kiln.flatcar.sysext).
  returned: success
  type: dict
state_path:
  description: Where kiln keeps the checkout state that later stages read.
  returned: success
  type: str
record_path:
  description: The build record of O(board) for the pinned version (pass it on to later modules).
  returned: success, when O(board) is set
  type: str
diff:
  description: C(before) and C(after), each with C(commit) and C(version) (FLATCAR_VERSION).
  returned: diff mode
  type: dict
"""


import datetime
import hashlib
import json
import os
import shutil
import stat
import tempfile

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import board_args, deprecated, mods_args
from ansible_collections.kiln.flatcar.plugins.module_utils._mods import ModsError, apply_mods, planned_atoms, rebuild_since, \
    summary, sysext_packages, validate_mods
from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, RecordError, digest, record_path
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import Runner
from ansible_collections.kiln.flatcar.plugins.module_utils._safety import ExitCleanup
from ansible_collections.kiln.flatcar.plugins.module_utils._sdk import CHECKOUT_STATE
from ansible_collections.kiln.flatcar.plugins.module_utils._version import (
    VERSIONFILE,
    FlatcarVersion,
    VersionError,
    atomic_write,
    check_binhost_root,
    read_versionfile,
    versionfile_content,
)

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "kiln",
    "GIT_AUTHOR_EMAIL": "kiln@localhost",
    "GIT_COMMITTER_NAME": "kiln",
    "GIT_COMMITTER_EMAIL": "kiln@localhost",
}
# what the build record keeps of the pinned version (the fields SdkStage.version_fields writes)
RECORD_VERSION_KEYS = ("FLATCAR_VERSION", "FLATCAR_VERSION_ID", "FLATCAR_BUILD_ID", "FLATCAR_SDK_VERSION", "channel", "official")


class Checkout:
    def __init__(self, module, cleanup):
        self.module = module
        self.cleanup = cleanup
        p = module.params
        self.dest = os.path.abspath(p["scripts_dir"])
        self.build_root = os.path.join(self.dest, "__build__", "images")
        self.state_path = os.path.join(self.build_root, "kiln", CHECKOUT_STATE)
        self.final_log = os.path.join(self.build_root, "kiln", "logs", "checkout.log")
        # No log (and no logs/ directory) until the module changes something: run() points the runner at the log then.
        self.runner = Runner(module, log_path=os.devnull, env=GIT_ENV,
                             env_allow=("GIT_SSH_COMMAND", "GIT_SSL_CAINFO"), fail_extra={"stage": "checkout"})
        self.git = module.get_bin_path("git", required=True)

    def g(self, *args, **kw):
        return self.runner.run([self.git, "-C", self.dest] + list(args), **kw)

    def q(self, *args):
        rc, out, _err = self.runner.capture([self.git, "-C", self.dest] + list(args))
        return out.strip() if rc == 0 else None

    def patches(self):
        result = []
        for path in self.module.params["patches"]:
            path = os.path.abspath(path)
            try:
                if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would hang the read, a directory fail it
                    self.module.fail_json(msg="patch %s is not a regular file" % path)
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                self.module.fail_json(msg="cannot read patch %s: %s" % (path, exc.strerror))
            result.append({"path": path, "sha256": hashlib.sha256(data).hexdigest()})
        return result

    def load_state(self):
        try:
            with open(self.state_path, "r", encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def resolve(self, ref):
        for cand in ("refs/tags/%s^{commit}" % ref, "refs/remotes/origin/%s^{commit}" % ref, "%s^{commit}" % ref):
            sha = self.q("rev-parse", "--verify", "--quiet", "--end-of-options", cand)
            if sha:
                return sha
        return None

    def describe(self, commit):
        tags = self.q("for-each-ref", "--count=1", "--sort=-v:refname", "--format=%(refname:short)", "--points-at=" + commit, "refs/tags/*")
        if tags:
            return tags
        return self.q("describe", "--tags", commit)

    def dirty_files(self):
        rc, out, _err = self.runner.capture([self.git, "-C", self.dest, "status", "--porcelain", "--untracked-files=no"])
        files = [line[3:] for line in (out if rc == 0 else "").splitlines() if len(line) > 3]
        return [f for f in files if f != VERSIONFILE]

    def pinned(self):
        """FLATCAR_VERSION of the checkout's version.txt now, or None."""
        try:
            return read_versionfile(os.path.join(self.dest, VERSIONFILE)).get("FLATCAR_VERSION")
        except VersionError:
            return None

    def run(self):
        module = self.module
        p = module.params
        patches = self.patches()
        exists = os.path.isdir(os.path.join(self.dest, ".git"))
        state = self.load_state() if exists else {}
        mods = self.module.kiln_mods
        key = {"repo": p["repo"], "ref": p["ref"], "upstream": p["upstream_repo"], "patches": [x["sha256"] for x in patches],
               "version": p["version"], "sdk_version": p["sdk_version"], "build_id": p["build_id"],
               "official": p["official"], "binhost": p["binhost"]}
        if mods or p["rebuild_since"]:  # (absent without: checkouts made before mods existed stay current)
            key["mods"] = [m["sha256"] for m in mods] + [p["rebuild_since"]]
        want_key = digest(key)
        head = self.q("rev-parse", "HEAD") if exists else None
        before = {"commit": head, "version": self.pinned() if exists else None}
        if exists and not p["force"] and state.get("key") == want_key and head == state.get("commit") and self._versionfile_ok(state):
            return self.result(False, state, "checkout is current", before)
        if module.check_mode:
            after = {"commit": (self.resolve(p["ref"]) if exists and not patches else None),
                     "version": self.requested_version()}
            result = dict(changed=True, reason="checkout would be created" if not exists else "checkout would be updated",
                          commit=head, state_path=self.state_path, patches=patches, mods=summary(mods),
                          rebuild_atoms=planned_atoms(mods), sysext_packages=sysext_packages(mods))
            if p["board"]:
                result["record_path"] = record_path(self.build_root, p["board"], after["version"]) if after["version"] else None
            if module._diff:
                result["diff"] = {"before": before, "after": after}
            return result
        if exists:
            self.runner.log_path = self.final_log
            os.makedirs(os.path.dirname(self.final_log), exist_ok=True)
        base = self.fetch(exists)
        applied = self.apply(patches, base)
        modded = self.apply_mods(mods)
        commit = self.q("rev-parse", "HEAD")
        version = self.pin_version(base, state)
        state = {"key": want_key, "repo": p["repo"], "ref": p["ref"], "base_commit": base, "commit": commit,
                 "patches": applied, "version": version, "versionfile_sha256": self._versionfile_sha(),
                 "mods": summary(mods), "rebuild_atoms": modded["rebuild_atoms"], "sysext_packages": modded["sysext_packages"],
                 "updated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        atomic_write(self.state_path, json.dumps(state, indent=2, sort_keys=True) + "\n")
        return self.result(True, state, "checked out %s" % p["ref"], before)

    def requested_version(self):
        """FLATCAR_VERSION the version option asks for (check mode), when it names a build id or is official."""
        p = self.module.params
        if not p["version"]:
            return None
        osv = FlatcarVersion.parse(p["version"])
        if p["official"]:
            return osv.version_id
        build_id = p["build_id"] or osv.build_id
        return FlatcarVersion.from_parts(osv.version_id, build_id).version if build_id else None

    def fetch(self, exists):
        """Clone or fetch, then check out the commit ``ref`` names; returns it. User values only after ``--``."""
        module = self.module
        p = module.params
        if not exists:
            if os.path.exists(self.dest) and os.listdir(self.dest):
                module.fail_json(msg="%s exists and is not a git checkout: remove it or choose another scripts_dir" % self.dest)
            parent = os.path.dirname(self.dest)
            os.makedirs(parent, exist_ok=True)
            # The clone log lives in a private directory (never beside scripts_dir) until the clone succeeded;
            # on failure it goes, and its tail is in the result (docs: notes).
            logdir = tempfile.mkdtemp(prefix="kiln-checkout-")
            self.cleanup.add(lambda: shutil.rmtree(logdir, ignore_errors=True))
            self.runner.log_path = os.path.join(logdir, "checkout.log")
            self.runner.on_failure = self._clone_failed
            self.runner.run([self.git, "clone", "--no-checkout", "--", p["repo"], self.dest],
                            msg="git clone of %s failed: check the repo URL and network access" % p["repo"])
            self.runner.on_failure = None
            self._move_log()
        else:
            dirty = self.dirty_files()
            if dirty and not p["force"]:
                module.fail_json(msg="%s has local changes (%s): commit or stash them, or use force" % (self.dest, ", ".join(dirty[:5])))
            self.g("fetch", "--tags", "--force", "origin", msg="git fetch from origin failed: check network access to %s" % p["repo"])
        if p["upstream_repo"]:
            self.g("fetch", "--tags", "--force", "--", p["upstream_repo"],
                   msg="fetching tags from %s failed (forks need upstream tags for git describe)" % p["upstream_repo"])
        base = self.resolve(p["ref"])
        if not base:
            module.fail_json(msg="ref %r not found in %s: give an existing tag, branch or commit" % (p["ref"], p["repo"]))
        self.g("checkout", "--force", "--detach", base, msg="git checkout of %s failed" % p["ref"])
        self.g("clean", "-fdq", "-e", "__build__")
        return base

    def apply(self, patches, base):
        applied = []
        for patch in patches:
            res = self.g("am", "-3", "--committer-date-is-author-date", "--", patch["path"], check=False)
            if res.rc != 0:
                self.g("am", "--abort", check=False)
                self.g("checkout", "--force", "--detach", base, check=False)
                self.runner.fail("patch %s does not apply to %s: rebase it onto that ref"
                                 % (os.path.basename(patch["path"]), self.module.params["ref"]), result=res)
            applied.append(patch)
        return applied

    def apply_mods(self, mods):
        """The mods as one deterministic commit on top of the patches (_mods.apply_mods); git through the runner."""
        def git(args, env=None):
            argv = [self.git, "-C", self.dest] + list(args)
            if args[0] in ("rev-parse", "show", "diff"):
                rc, out, _err = self.runner.capture(argv, env=env)
            else:
                rc, out = self.runner.run(argv, env=env, check=False).rc, ""
            if rc != 0:
                raise ModsError("git %s failed (rc %d), see the log" % (" ".join(a for a in args if not a.startswith("-"))[:40], rc))
            return out
        try:
            result = apply_mods(self.dest, mods, git)
            since = self.module.params["rebuild_since"]
            if since:
                commit = self.resolve(since)
                if not commit:
                    raise ModsError("rebuild_since %r is not a commit of the checkout" % since)
                result["rebuild_atoms"] = rebuild_since(commit, git)
            return result
        except (ModsError, OSError) as exc:
            self.g("reset", "--hard", "--quiet", check=False)
            self.runner.fail("mods cannot be applied to %s: %s" % (self.module.params["ref"], exc))
        return None  # not reached

    def _clone_failed(self, _msg, payload):
        """A failed clone: the log (private, removed on exit) is not worth a path; its tail is in the result."""
        payload.pop("log_path", None)
        payload.setdefault("log_tail", [])

    def _move_log(self):
        final = self.final_log
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            shutil.move(self.runner.log_path, final)
        except OSError:
            pass
        self.runner.log_path = final

    def _versionfile_sha(self):
        try:
            with open(os.path.join(self.dest, VERSIONFILE), "rb") as fh:
                return hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            return None

    def _versionfile_ok(self, state):
        return state.get("versionfile_sha256") and state.get("versionfile_sha256") == self._versionfile_sha()

    def pin_version(self, base, state):
        """Parse the version once (option, else the tag of ``base``), pin the build id, write version.txt; the fields."""
        module = self.module
        p = module.params
        vpath = os.path.join(self.dest, VERSIONFILE)
        try:
            upstream = read_versionfile(vpath)
        except VersionError as exc:
            module.fail_json(msg="%s: is %s a Flatcar scripts repository?" % (exc, p["repo"]))
        try:
            text = p["version"] or self.describe(base)
            if not text:
                module.fail_json(msg="cannot derive a version for %s (no tags): set version, or upstream_repo for a fork" % p["ref"])
            requested = FlatcarVersion.parse(text)
            build_id = p["build_id"] or requested.build_id
            if p["official"]:
                build_id = ""
            elif not build_id:
                # Pin once: reuse the id of an earlier run of this same checkout instead of a new date.
                prev = (state.get("version") or {})
                if prev.get("FLATCAR_VERSION_ID") == requested.version_id and prev.get("FLATCAR_BUILD_ID"):
                    build_id = prev["FLATCAR_BUILD_ID"]
                else:
                    build_id = "kiln-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
            osv = FlatcarVersion.from_parts(requested.version_id, build_id)
            osv.prefix = requested.prefix
            sdk = FlatcarVersion.parse(p["sdk_version"] or upstream.get("FLATCAR_SDK_VERSION"), "SDK version")
        except VersionError as exc:
            module.fail_json(msg=str(exc))
        extra = {"FLATCAR_DEV_BUILDS": p["binhost"]} if p["binhost"] else {}
        content = versionfile_content(osv, sdk, extra)
        try:
            with open(vpath, "r", encoding="utf-8") as fh:
                current = fh.read()
        except OSError:
            current = None
        if current != content:
            atomic_write(vpath, content)
        fields = osv.as_dict()
        fields["FLATCAR_SDK_VERSION"] = sdk.version
        fields["channel"] = requested.channel
        return fields

    def sync_record(self, version):
        """With a board: the pinned version (and channel) in that board's build record; (path, changed)."""
        board = self.module.params["board"]
        if not board or not version:
            return None, False
        path = record_path(self.build_root, board, version["FLATCAR_VERSION"])
        fields = dict((k, version.get(k)) for k in RECORD_VERSION_KEYS)
        if self.module.check_mode:
            return path, False
        try:
            with BuildRecord.open(path, board=board, version=fields, build_root=self.build_root) as record:
                if record.data.get("version") == fields and os.path.isfile(path):
                    return path, False
                record.set("version", fields)
                record.save()
        except RecordError as exc:
            self.module.fail_json(msg=str(exc), record_path=path)
        return path, True

    def result(self, changed, state, reason, before):
        rpath, record_changed = self.sync_record(state.get("version"))
        out = dict(changed=changed or record_changed, reason=reason, commit=state.get("commit"), base_commit=state.get("base_commit"),
                   version=state.get("version"), versionfile=os.path.join(self.dest, VERSIONFILE), patches=state.get("patches", []),
                   mods=state.get("mods", []), rebuild_atoms=state.get("rebuild_atoms", []), sysext_packages=state.get("sysext_packages", {}),
                   state_path=self.state_path, log_path=self.final_log if os.path.isfile(self.final_log) else None)
        if rpath:
            out["record_path"] = rpath
        if self.module._diff:
            out["diff"] = {"before": before, "after": {"commit": state.get("commit"),
                                                       "version": (state.get("version") or {}).get("FLATCAR_VERSION")}}
        return out


def validate(module):
    """Every option value, before the checkout is touched (one line on failure)."""
    p = module.params
    v = _validate
    dest = p["scripts_dir"]
    if not dest or not dest.strip() or any(ord(c) < 32 for c in dest):
        module.fail_json(msg="scripts_dir %r is not a directory path (empty, or with NUL, newline or control characters)" % dest)
    if not os.path.isabs(dest):
        module.fail_json(msg="scripts_dir %r is not an absolute path: give the full path of the checkout on the builder" % dest)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        module.fail_json(msg="scripts_dir %s exists and is not a directory: remove it or choose another scripts_dir" % dest)
    for patch in p["patches"]:
        if not patch or any(ord(c) < 32 for c in patch):
            module.fail_json(msg="patch %r is not a file path (empty, or with NUL, newline or control characters)" % patch)
    if p["official"] and p["build_id"]:
        module.fail_json(msg="official builds have no build id: drop build_id or set official: false")
    v.check(module, v.git_repo, p["repo"], "repo")
    if p["upstream_repo"]:
        v.check(module, v.git_repo, p["upstream_repo"], "upstream_repo")
    v.check(module, v.git_ref, p["ref"], "ref")
    if p["rebuild_since"]:
        v.check(module, v.git_ref, p["rebuild_since"], "rebuild_since")
    if p["version"]:
        v.check(module, v.version, p["version"])
    if p["sdk_version"]:
        v.check(module, v.version, p["sdk_version"], "SDK version")
    if p["build_id"]:
        v.check(module, v.build_id, p["build_id"])
        # the pinned version must parse too (e.g. a build id that the version parser would split)
        base = FlatcarVersion.parse(p["version"]).version_id if p["version"] else "0.0.0"
        v.check(module, v.version, "%s+%s" % (base, p["build_id"]), "version with build_id")
    if p["binhost"] is not None:
        try:
            check_binhost_root(p["binhost"])
        except VersionError as exc:
            module.fail_json(msg=str(exc))
    try:
        module.kiln_mods = validate_mods(p["mods"])
    except ModsError as exc:
        module.fail_json(msg=str(exc))


def main():
    spec = dict(
        scripts_dir=dict(type="path", required=True, aliases=["dest"], deprecated_aliases=deprecated("dest")),
        repo=dict(type="str", default="https://github.com/flatcar/scripts.git"),
        ref=dict(type="str", required=True),
        upstream_repo=dict(type="str"),
        patches=dict(type="list", elements="path", default=[]),
        rebuild_since=dict(type="str"),
        version=dict(type="str"),
        sdk_version=dict(type="str"),
        build_id=dict(type="str"),
        official=dict(type="bool", default=False),
        binhost=dict(type="str"),
        force=dict(type="bool", default=False),
    )
    spec.update(board_args())
    spec.update(mods_args())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    validate(module)
    with ExitCleanup() as cleanup:  # the private clone log directory: gone on every exit path
        try:
            result = Checkout(module, cleanup).run()
        except OSError as exc:  # e.g. a read-only or full scripts_dir
            module.fail_json(msg="sdk_checkout cannot write %s: %s" % (exc.filename or module.params["scripts_dir"], exc.strerror or exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
