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
    description: Lease length in seconds. A lease not renewed within it is stale and may be taken over.
    type: int
    default: 28800
  force:
    description: Take (or release) the lock even when another owner's lease is still live.
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
"""

import datetime
import json
import os
import socket
import time

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import board_args, version_args
from ansible_collections.kiln.flatcar.plugins.module_utils._version import atomic_write


def _stamp(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_lease(path):
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) and "owner" in data else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"owner": "(unreadable lease)", "expires_epoch": 0}


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
    p = module.params
    # the version names the lease file: canonical FLATCAR_VERSION only (no '/', no '..', no channel prefix)
    p["version"] = _validate.check(module, _validate.version, p["version"], canonical=True).version
    if p["ttl"] <= 0:
        module.fail_json(msg="ttl must be a positive number of seconds")
    path = os.path.join(p["dir"], p["board"], p["version"] + ".lock")
    result = dict(path=path)
    if not module.check_mode or os.path.isdir(p["dir"]):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as exc:
            module.fail_json(msg="cannot create lock directory %s: %s" % (os.path.dirname(path), exc.strerror), path=path)
    guard_fd = None
    if os.path.isdir(p["dir"]) and fcntl is not None:
        guard_fd = os.open(os.path.join(p["dir"], ".kiln-locks.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(guard_fd, fcntl.LOCK_EX)
    try:
        now = time.time()
        lease = read_lease(path)
        live = lease is not None and float(lease.get("expires_epoch", 0)) > now
        mine = lease is not None and lease.get("owner") == p["owner"]
        if p["state"] == "query":
            module.exit_json(changed=False, held=bool(mine and live), holder=lease, **result)
        if p["state"] == "released":
            if lease is None:
                module.exit_json(changed=False, held=False, holder=None, **result)
            if not mine and live and not p["force"]:
                module.exit_json(changed=False, held=False, holder=lease, msg="lock is held by %s, not released" % lease.get("owner"), **result)
            if not module.check_mode:
                os.unlink(path)
            module.exit_json(changed=True, held=False, holder=None, **result)
        # acquire / renew
        if lease is not None and not mine and live and not p["force"]:
            module.fail_json(
                msg="build tree for %s %s on %s is locked by %s (host %s) until %s: wait for that pipeline, or release the "
                "lock with owner=%s or force=true" % (p["board"], p["version"], socket.gethostname(), lease.get("owner"),
                                                      lease.get("host"), lease.get("expires"), lease.get("owner")),
                holder=lease, **result)
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
            atomic_write(path, json.dumps(new, indent=2, sort_keys=True) + "\n")
        module.exit_json(changed=not mine, held=True, holder=new, **result)
    finally:
        if guard_fd is not None:
            os.close(guard_fd)


if __name__ == "__main__":
    main()
