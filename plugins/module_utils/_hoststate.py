# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Prepared-state records of a host: what a role last set up there, as a digest of what it was asked to set up.

A role computes the digest of its inputs (its variables, its templates), checks it against the record before its
slow steps (package installs, accounts, configuration files) and skips them when the digest is unchanged and the
record is younger than a maximum age; after the steps succeed it records the digest. State a role must see every
run (a daemon that answers, free disk) stays outside: only preparation is skipped."""

from __future__ import annotations

import hashlib
import json
import os
import time

from ansible_collections.kiln.flatcar.plugins.module_utils._version import atomic_write

SCHEMA = "kiln.flatcar/host-state"


def digest_of(data):
    """sha256 of ``data`` as canonical JSON (sorted keys, no whitespace); raises TypeError for non-JSON data."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def state_path(directory, name):
    return os.path.join(directory, name + ".json")


def read(path):
    """The record at ``path`` (a dict with ``digest`` and ``recorded_epoch``), or (None, why)."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None, "no record yet"
    except (OSError, ValueError) as exc:
        return None, "unreadable record (%s)" % " ".join(str(getattr(exc, "strerror", None) or exc).split())[:120]
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("digest"), str) \
            or isinstance(data.get("recorded_epoch"), bool) or not isinstance(data.get("recorded_epoch"), (int, float)):
        return None, "not a host-state record"
    return data, None


def check(path, digest, max_age_s, now=None):
    """(current, reason, record): current when the record holds ``digest`` and is at most ``max_age_s`` old."""
    now = time.time() if now is None else now
    rec, why = read(path)
    if rec is None:
        return False, why, None
    if rec["digest"] != digest:
        return False, "inputs changed", rec
    age = now - rec["recorded_epoch"]
    if age < 0:
        return False, "recorded in the future (clock moved back)", rec
    if max_age_s and age > max_age_s:
        return False, "older than %d s" % max_age_s, rec
    return True, "unchanged for %d s" % int(age), rec


def record(path, name, digest, now=None):
    """Write the record atomically (mode 0600: it says what was set up, not a secret, but nobody else's business)."""
    now = time.time() if now is None else now
    atomic_write(path, json.dumps({"schema": SCHEMA, "name": name, "digest": digest, "recorded_epoch": now},
                                  sort_keys=True) + "\n", mode=0o600)
