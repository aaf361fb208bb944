#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_transfer
short_description: Move a build's artifacts host to host (builder to signer to mirror) and verify them on arrival
version_added: 0.1.0
description:
  - Runs B(on the source host) and copies the outputs of chosen build-record stages with C(rsync) over C(ssh) straight
    to the destination host; nothing passes through the Ansible controller, so the controller's memory does not grow
    with the artifact size.
  - Paths stay relative to the SDK build root, so the tree keeps its meaning on the destination
    (C(<dest_build_root>/images/<board>/...), record at C(<dest_build_root>/kiln/<board>/<version>/build-record.json)).
  - The source's stage entries are merged into the destination's build record (under the record's lock); stages only the
    destination has (for example C(sign) on a signer) are kept.
  - After the copy, every transferred file's size and sha256 are checked B(on the destination against the build record
    there). A file corrupted in transit is deleted on the destination and the task fails naming it, so it can never be
    signed or published; a rerun transfers it again.
  - A rerun whose files are already present and verified on the destination, with an identical record, changes nothing.
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
  - kiln.flatcar._ssh.legacy
  - kiln.flatcar._ssh.remote
attributes:
  check_mode:
    support: full
    details: Compares the destination with the record and reports what would be sent; copies and creates nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  build_root:
    description: SDK build root on the source (C(<scripts_dir>/__build__/images)). Defaults to four directories above the record.
  board:
    description: Board (with O(build_root) and O(version)).
  version:
    description: FLATCAR_VERSION (with O(build_root) and O(board)).
  stages:
    description:
      - Stages whose outputs are sent. Entries ending in C(*) match by prefix (V(vm_image:*)) and select only the
        stages that passed, so a failed stage of a firmware or format that is no longer asked for does not stop the
        transfer. A stage named in full must have passed.
      - Default every stage of the record that passed.
    type: list
    elements: str
  dest_host:
    description: Address of the destination host (as the source host reaches it).
    type: str
    required: true
  ssh_user:
    description:
      - SSH user on the destination. The alias O(dest_user) is deprecated and will be removed in 2.0.0.
    default: root
    aliases: [dest_user]
  dest_build_root:
    description:
      - Build root on the destination (absolute path, plain characters). Created there by a Python call over ssh
        (the path travels as JSON data), never by a remote shell command.
    type: path
    required: true
  log_path:
    description: Transfer log on the source. Default C(<state dir>/logs/transfer-<dest_host>.log).
    type: path
"""

EXAMPLES = r"""
- name: Send the image and VM images from the builder to the signer
  kiln.flatcar.artifact_transfer:
    build_root: /var/lib/kiln/scripts/__build__/images
    board: amd64-usr
    version: 4593.2.5+kiln-1
    stages: [image, "vm_image:*"]
    dest_host: signer.example.internal
    dest_build_root: /var/lib/kiln-signer/builds
    ssh_user: root
    ssh_private_key_file: /var/lib/kiln/.ssh/id_ed25519
"""

RETURN = r"""
changed:
  description: Whether files were sent or the destination record changed.
  returned: always
  type: bool
files:
  description: Every file of the selected stages.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: Path relative to the build root.
      type: str
    size:
      description: Size in bytes.
      type: int
    sha256:
      description: SHA-256 (hex) from the record, verified on the destination.
      type: str
sent:
  description: Paths that were (or in check mode would be) sent.
  returned: success
  type: list
  elements: str
bytes_sent:
  description: Total size of the sent files.
  returned: success
  type: int
record_path:
  description: Build record on the source.
  returned: always
  type: str
dest_record_path:
  description: Build record on the destination.
  returned: success
  type: str
record_changed:
  description: Whether the destination record changed.
  returned: success
  type: bool
verified:
  description: Number of files verified on the destination after the transfer.
  returned: success
  type: int
duration_s:
  description: Wall time of the transfer.
  returned: success
  type: float
log_path:
  description: Transfer log on the source.
  returned: always
  type: str
bad_files:
  description: Files that failed verification on the destination (removed there).
  returned: failure
  type: list
  elements: str
"""

import fnmatch
import os
import shutil
import tempfile
import time

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import (
    SSH_MUTUALLY_EXCLUSIVE,
    board_args,
    deprecated,
    record_args,
    remote_args,
    ssh_args,
    validate_common,
    version_args,
)
from ansible_collections.kiln.flatcar.plugins.module_utils._hostxfer import remote_mkdir, remote_python, ssh_command, ssh_e, target
from ansible_collections.kiln.flatcar.plugins.module_utils._safety import ExitCleanup, UnsafePath, confine
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import LocateError, Stage, guarded, locate

# Runs on the destination: compare files with a record; merge the source record; verify; remove bad files.
REMOTE = r'''
import errno, fcntl, hashlib, json, os, socket, tempfile

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(4 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)

def check(root, files):
    missing, bad, ok = [], [], 0
    for f in files:
        full = os.path.join(root, f["path"])
        try:
            st = os.stat(full)
        except OSError:
            missing.append(f["path"])
            continue
        if st.st_size != f["size"] or sha256(full) != f["sha256"]:
            bad.append(f["path"])
        else:
            ok += 1
    return missing, bad, ok

def selected(record, stages):
    out = []
    for name in stages:
        for o in record["stages"].get(name, {}).get("outputs", []):
            out.append(o)
    return out

def merged(dest, src, stages):
    if dest is None or dest.get("kind") != src.get("kind"):
        new = json.loads(json.dumps(src))
        new["stages"] = dict((n, src["stages"][n]) for n in src["stages"] if n in stages)
        new["stage_order"] = [n for n in src.get("stage_order", []) if n in stages]
        return new
    new = json.loads(json.dumps(dest))
    for key in ("board", "arch", "version", "build_dir", "group", "source"):
        if key in src:
            new[key] = src[key]
    for n in stages:
        new["stages"][n] = src["stages"][n]
        if n not in new["stage_order"]:
            new["stage_order"].append(n)
    return new

def comparable(rec):
    if rec is None:
        return None
    rec = dict(rec)
    for key in ("updated", "build_root", "created"):
        rec.pop(key, None)
    return rec

def main(p):
    root, rec_path, stages = p["dest_build_root"], p["dest_record"], p["stages"]
    files = selected(p["record"], stages)
    try:
        with open(rec_path) as fh:
            dest = json.load(fh)
    except (OSError, ValueError):
        dest = None
    want = merged(dest, p["record"], stages)
    if p["mode"] == "check":
        missing, bad, ok = check(root, files)
        return {"missing": missing, "bad": bad, "ok": ok, "record_changed": comparable(want) != comparable(dest),
                "root_exists": os.path.isdir(root)}
    if not files and comparable(want) == comparable(dest):
        return {"missing": [], "bad": [], "ok": 0, "record_changed": False}
    os.makedirs(os.path.dirname(rec_path), exist_ok=True)
    lfd = os.open(rec_path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return {"error": "build record %s on %s is being written by another kiln task" % (rec_path, socket.gethostname())}
    try:
        try:
            with open(rec_path) as fh:
                dest = json.load(fh)
        except (OSError, ValueError):
            dest = None
        want = merged(dest, p["record"], stages)
        changed = comparable(want) != comparable(dest)
        if changed:
            want["build_root"] = root
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(rec_path), prefix=".build-record.")
            with os.fdopen(fd, "w") as fh:
                json.dump(want, fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, rec_path)
        # verify against the record now on the destination
        with open(rec_path) as fh:
            on_dest = json.load(fh)
        missing, bad, ok = check(root, selected(on_dest, stages))
        for path in bad:
            try:
                os.unlink(os.path.join(root, path))
            except OSError:
                pass
        return {"missing": missing, "bad": bad, "ok": ok, "record_changed": changed}
    finally:
        os.close(lfd)
'''


def select_stages(record, wanted):
    names = [n for n in record.data.get("stage_order", []) if n in record.data["stages"]]
    passed = [n for n in names if record.stage(n).get("status") == "passed"]
    if not wanted:
        return passed
    out = []
    for pattern in wanted:
        if "*" in pattern:
            hits = [n for n in passed if fnmatch.fnmatchcase(n, pattern)]
        elif pattern in names:
            hits = [pattern]
        else:
            return pattern
        out.extend(h for h in hits if h not in out)
    return out


def validate(module):
    """Every value that becomes a path or a host, before anything runs (one line on failure)."""
    p = module.params
    v = _validate
    validate_common(module)
    if p["version"]:
        p["version"] = v.check(module, v.version, p["version"], canonical=True).version
    v.check(module, v.host, p["dest_host"], "dest_host")
    p["dest_build_root"] = v.check(module, v.remote_path, p["dest_build_root"], "dest_build_root")


def main():
    spec = dict(
        stages=dict(type="list", elements="str"),
        dest_host=dict(type="str", required=True),
        dest_build_root=dict(type="path", required=True),
        log_path=dict(type="path"),
    )
    spec.update(record_args())
    spec.update(board_args())
    spec.update(version_args())
    spec.update(ssh_args(user_default="root"))
    spec["ssh_user"].update(aliases=["dest_user"], deprecated_aliases=deprecated("dest_user"))
    spec.update(remote_args())
    module = AnsibleModule(argument_spec=spec, required_one_of=[("record_path", "build_root")],
                           mutually_exclusive=SSH_MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    guarded(module, lambda: _main(module))


def _main(module):
    validate(module)
    p = module.params
    try:
        location = locate(p["record_path"], build_root=p["build_root"], board=p["board"], version=p["version"])
    except LocateError as exc:
        module.fail_json(msg=str(exc))
    if location.record_path is None:
        module.fail_json(msg="give record_path, or build_root with board and version")
    log_path = p["log_path"] or os.path.join(location.state_dir, "logs", "transfer-%s.log" % p["dest_host"])
    with ExitCleanup() as cleanup, Stage(module, None, location, writes=False, log_path=log_path) as reader:
        tmp = tempfile.mkdtemp(prefix="kiln-transfer-")  # private (0700): the ssh-agent socket
        cleanup.add(lambda: shutil.rmtree(tmp, ignore_errors=True))
        runner = reader.runner()
        ssh, agent = ssh_command(runner, p, tmp)
        if ssh is None:
            runner.fail(agent)
        if agent is not None:
            cleanup.add(agent.close)
        _transfer(module, reader, runner, ssh)


def _transfer(module, reader, runner, ssh):
    p = module.params
    record, build_root, rpath = reader.record, reader.location.build_root, reader.location.record_path
    rel_record = os.path.relpath(rpath, build_root)
    result = reader.base_result()
    result.pop("changed")
    stages = select_stages(record, p["stages"])
    if isinstance(stages, str):
        runner.fail("stage %s is not in the build record %s: build it first" % (stages, rpath))
    for name in stages:
        reader.require(name, "only passed stages are transferred; rerun it on this host first")
    files = []
    for name in stages:
        for out in record.stage(name).get("outputs", []):
            if out["path"] not in [f["path"] for f in files]:
                files.append({"path": out["path"], "size": out["size"], "sha256": out["sha256"]})
    for f in files:
        try:  # record values are untrusted: every path stays inside the build root (here and on the destination)
            full = confine(build_root, f["path"], "recorded output")
        except UnsafePath as exc:
            runner.fail("build record %s: %s" % (rpath, exc))
        try:
            size = os.path.getsize(full)
        except OSError:
            runner.fail("%s is missing on the source host: rebuild the stage that made it" % full)
        if size != f["size"]:
            runner.fail("%s has %d bytes but the record says %d: the source copy changed after it was recorded" % (full, size, f["size"]))

    dest = target(p, "dest_host")
    dest_record = os.path.join(p["dest_build_root"], rel_record)
    payload = dict(dest_build_root=p["dest_build_root"], dest_record=dest_record, stages=stages, record=record.data, mode="check")
    if not files and not module.check_mode:
        # nothing to copy (a boot check keeps no files): one call merges the stages into the record there, or finds
        # it already current without taking its lock
        payload["mode"] = "apply"
        start = time.monotonic()
        done = remote_python(runner, ssh, dest, REMOTE, payload, p["remote_python"], msg="updating the record on %s failed" % dest)
        if done.get("error"):
            runner.fail(done["error"])
        result.update(files=[], dest_record_path=dest_record, sent=[], bytes_sent=0)
        module.exit_json(changed=done["record_changed"], record_changed=done["record_changed"], verified=0,
                         duration_s=round(time.monotonic() - start, 3) if done["record_changed"] else 0.0, **result)
    state = remote_python(runner, ssh, dest, REMOTE, payload, p["remote_python"], msg="checking %s failed" % dest)
    need = state["missing"] + state["bad"]
    result.update(files=files, dest_record_path=dest_record, sent=need,
                  bytes_sent=sum(f["size"] for f in files if f["path"] in need))
    if not need and not state["record_changed"]:
        module.exit_json(changed=False, record_changed=False, verified=state["ok"], duration_s=0.0, **result)
    if module.check_mode:
        module.exit_json(changed=True, record_changed=state["record_changed"], verified=0, duration_s=0.0, **result)

    start = time.monotonic()
    if need:
        argv = ["rsync", "-a", "--partial", "--ignore-times", "--files-from=-", "-e", ssh_e(ssh), "--rsync-path=" + p["rsync_path"]]
        argv += ["--", build_root.rstrip("/") + "/", "%s:%s/" % (dest, p["dest_build_root"].rstrip("/"))]
        # the root is made by a Python call (path as JSON data), never by a remote shell command; not when the
        # comparison above found it there
        if not state.get("root_exists"):
            remote_mkdir(runner, ssh, dest, p["dest_build_root"], ".", p["remote_python"])
        runner.run(argv, data="\n".join(need) + "\n", msg="rsync to %s failed: see the log" % dest)
    payload["mode"] = "apply"
    done = remote_python(runner, ssh, dest, REMOTE, payload, p["remote_python"], msg="verifying on %s failed" % dest)
    if done.get("error"):
        runner.fail(done["error"])
    if done["bad"] or done["missing"]:
        bad = done["bad"] + done["missing"]
        runner.fail("%s on %s does not match the build record (%s): corrupted or lost in transit; the bad copy was removed "
                    "there, rerun to transfer it again" % (bad[0], dest, "sha256 differs" if done["bad"] else "missing"),
                    bad_files=bad)
    runner.note("sent %d files (%d bytes) to %s; %d verified" % (len(need), result["bytes_sent"], dest, done["ok"]))
    module.exit_json(changed=True, record_changed=done["record_changed"], verified=done["ok"],
                     duration_s=round(time.monotonic() - start, 3), **result)


if __name__ == "__main__":
    main()
