#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: build_lock
short_description: A lease lock per (builder, version, board) so two pipelines never build into the same tree
version_added: 0.1.0
description:
  - Keeps a lease file C(<dir>/<board>/<version>.lock) on the builder (JSON with owner, host, acquisition and expiry time).
  - O(state=acquired) takes the lock for O(owner), or renews it when O(owner) already holds it. Another owner's lease
    that has not expired is refused with a one-line error naming the holder and when the lease ends.
    An expired lease (older than its TTL) is stale and taken over; the result says from whom.
  - O(state=released) removes the lease when O(owner) holds it (or anyone with O(force=true)); a lease held by another
    owner is left alone and reported.
  - A lease file that is not a valid lease (not JSON, no owner, an C(expires_epoch) that is not a number, a directory)
    is corrupt. It never locks a version for good - O(force=true) replaces (or, with O(state=released), removes) it;
    without O(force) the task fails with one line naming the file. O(state=query) reports it in RV(corrupt).
  - Reads and writes of the lease happen under an exclusive C(flock) on C(<dir>/.kiln-locks.lock), and the lease is
    written atomically, so two acquirers racing on one builder cannot both win.
  - The owner is the pipeline run id (C(kiln_run_id)). Rerunning a pipeline with the same run id resumes under
    the lease it already holds.
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
  - kiln.flatcar._common
  - kiln.flatcar._common.board_required
  - kiln.flatcar._common.version_required
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: Acquiring renews the lease (new expiry) and reports C(changed) only when the holder changed.
options:
  dir:
    description: Directory on the builder holding the lease files (persistent disk).
    type: path
    required: true
  version:
    description:
      - FLATCAR_VERSION of the build (the lock is per version and board on this builder); it names the lease file, so
        only the canonical form is accepted.
  owner:
    description: Who takes or gives back the lock, normally the pipeline's run id.
    type: str
    required: true
  state:
    description: V(acquired) takes or renews the lease, V(released) gives it back, V(query) only reports it.
    type: str
    choices: [acquired, released, query]
    default: acquired
  ttl:
    description:
      - Lease length in seconds, from 1 to 2592000 (30 days). A lease not renewed within it is stale and may be
        taken over.
    type: int
    default: 28800
  force:
    description: Take (or release) the lock even when another owner's lease is still live, or its lease file is corrupt.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Lock the build tree of this version and board
  kiln.flatcar.build_lock:
    dir: /var/lib/kiln/locks
    board: arm64-usr
    version: 4593.2.5
    owner: "{{ kiln_run_id }}"
    ttl: 28800

- name: Give the lock back
  kiln.flatcar.build_lock:
    dir: /var/lib/kiln/locks
    board: arm64-usr
    version: 4593.2.5
    owner: "{{ kiln_run_id }}"
    state: released
"""

RETURN = r"""
changed:
  description: Whether the lease file changed holder (acquired from nobody/stale owner, or released).
  returned: always
  type: bool
path:
  description: The lease file.
  returned: always
  type: str
held:
  description: Whether O(owner) holds the lock after the task.
  returned: always
  type: bool
holder:
  description: The lease after the task (owner, host, acquired, expires as UTC timestamps, expires_epoch), or null.
  returned: always
  type: dict
taken_over_from:
  description: The stale lease that was replaced, when one was.
  returned: when a stale lease was taken over
  type: dict
corrupt:
  description: Why the lease file is not a valid lease (it was replaced or removed with O(force=true)).
  returned: when the lease file is corrupt
  type: str
"""

import datetime
import json
import math
import os
import socket
import time

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import board_args, version_args
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import guarded, one_line
from ansible_collections.kiln.flatcar.plugins.module_utils._version import atomic_write

MAX_TTL = 30 * 24 * 3600  # a lease longer than a month is a typo (10**12 s overflows the timestamps)


def _stamp(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class CorruptLease(ValueError):
    """The lease file exists but is not a lease; the message is one line."""


def read_lease(path):
    """The lease (a dict with a str ``owner`` and a finite number ``expires_epoch``), None when there is none.
    Raises CorruptLease for anything else (not JSON, wrong types, a directory, unreadable)."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CorruptLease(one_line(getattr(exc, "strerror", None) or exc, 200))
    if not isinstance(data, dict):
        raise CorruptLease("not a JSON object")
    if not isinstance(data.get("owner"), str) or not data["owner"]:
        raise CorruptLease("no owner")
    expires = data.get("expires_epoch")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires):
        raise CorruptLease("expires_epoch %r is not a number" % (expires,))
    return data


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type="path", required=True),
            owner=dict(type="str", required=True),
            state=dict(type="str", default="acquired", choices=["acquired", "released", "query"]),
            ttl=dict(type="int", default=28800),
            force=dict(type="bool", default=False),
            **dict(board_args(required=True), **version_args(required=True))
        ),
        supports_check_mode=True,
    )
    guarded(module, lambda: run(module))


def run(module):
    p = module.params
    # the version names the lease file: canonical FLATCAR_VERSION only (no '/', no '..', no channel prefix)
    p["version"] = _validate.check(module, _validate.version, p["version"], canonical=True).version
    if not 0 < p["ttl"] <= MAX_TTL:
        module.fail_json(msg="ttl %d is out of range: give 1 to %d seconds (30 days)" % (p["ttl"], MAX_TTL))
    path = os.path.join(p["dir"], p["board"], p["version"] + ".lock")
    result = dict(path=path)
    if not module.check_mode:  # check mode creates nothing, not even the board's directory
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as exc:
            module.fail_json(msg="cannot create lock directory %s: %s" % (os.path.dirname(path), exc.strerror), path=path)
    guard_fd = None
    if os.path.isdir(p["dir"]) and fcntl is not None:
        guard = os.path.join(p["dir"], ".kiln-locks.lock")
        try:
            if module.check_mode:  # check mode creates nothing: it locks the guard only when it exists
                guard_fd = os.open(guard, os.O_RDONLY) if os.path.isfile(guard) else None
            else:
                guard_fd = os.open(guard, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            module.fail_json(msg="cannot open the lock guard %s: %s: make %s writable" % (guard, exc.strerror, p["dir"]),
                             path=path)
        if guard_fd is not None:
            fcntl.flock(guard_fd, fcntl.LOCK_EX)
    try:
        try:
            _locked(module, p, path, result)
        except OSError as exc:
            module.fail_json(msg="cannot write the lease %s: %s: make %s writable" % (
                getattr(exc, "filename", None) or path, exc.strerror or exc, p["dir"]), path=path)
    finally:
        if guard_fd is not None:
            os.close(guard_fd)


def _locked(module, p, path, result):
    now = time.time()
    try:
        lease = read_lease(path)
    except CorruptLease as exc:
        corrupt = "lease file %s is corrupt (%s)" % (path, exc)
        if p["state"] == "query":
            module.exit_json(changed=False, held=False, holder=None, corrupt=str(exc), **result)
        if not p["force"]:
            module.fail_json(msg="%s: check that no pipeline builds %s %s here, then rerun with force=true (or remove the file)"
                             % (corrupt, p["board"], p["version"]), corrupt=str(exc), **result)
        module.warn("%s: replaced (force=true)" % corrupt)
        result["corrupt"] = str(exc)
        if p["state"] == "released":
            if not module.check_mode:
                _remove(path)
            module.exit_json(changed=True, held=False, holder=None, **result)
        lease = None
        _acquire(module, p, path, result, None, now, replace_corrupt=True)
    live = lease is not None and lease["expires_epoch"] > now
    mine = lease is not None and lease.get("owner") == p["owner"]
    if p["state"] == "query":
        module.exit_json(changed=False, held=bool(mine and live), holder=lease, **result)
    if p["state"] == "released":
        if lease is None:
            module.exit_json(changed=False, held=False, holder=None, **result)
        if not mine and live and not p["force"]:
            module.exit_json(changed=False, held=False, holder=lease, msg="lock is held by %s, not released" % lease.get("owner"), **result)
        if not module.check_mode:
            _remove(path)
        module.exit_json(changed=True, held=False, holder=None, **result)
    # acquire / renew
    if lease is not None and not mine and live and not p["force"]:
        module.fail_json(
            msg="build tree for %s %s on %s is locked by %s (host %s) until %s: wait for that pipeline, or release the "
            "lock with owner=%s or force=true" % (p["board"], p["version"], socket.gethostname(), lease.get("owner"),
                                                  lease.get("host"), lease.get("expires"), lease.get("owner")),
            holder=lease, **result)
    _acquire(module, p, path, result, lease, now)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        os.rmdir(path)  # a directory in the lease's place (corrupt); only an empty one is removed
    else:
        os.unlink(path)


def _acquire(module, p, path, result, lease, now, replace_corrupt=False):
    mine = lease is not None and lease.get("owner") == p["owner"]
    new = {
        "owner": p["owner"],
        "host": socket.gethostname(),
        "board": p["board"],
        "version": p["version"],
        "acquired": lease.get("acquired") if mine else _stamp(now),
        "renewed": _stamp(now),
        "expires": _stamp(now + p["ttl"]),
        "expires_epoch": round(now + p["ttl"], 3),
        "ttl": p["ttl"],
    }
    if lease is not None and not mine:
        result["taken_over_from"] = lease
    if not module.check_mode:
        if replace_corrupt and os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        atomic_write(path, json.dumps(new, indent=2, sort_keys=True) + "\n")
    module.exit_json(changed=not mine or replace_corrupt, held=True, holder=new, **result)


if __name__ == "__main__":
    main()
