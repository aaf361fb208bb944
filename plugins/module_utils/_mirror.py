# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Release-mirror operations on a directory tree: staging, verify, atomic rename, ``current`` swap.

This file runs in two places and therefore imports the Python standard library only (3.6+):

* inside ``kiln.flatcar.publish`` for a mirror on the same host (backend ``local``), through
  :func:`run_op`;
* on a remote mirror host, where the publish backend ``dir`` runs **this file's source** with
  :func:`_hostxfer.remote_python_call` (``ssh -- <mirror> 'python3 -'``, program and JSON request on
  stdin, :func:`main` answers), so the mirror host needs nothing but ``python3`` and ``rsync``.

Layout (Flatcar's own, flatcar-sdk.md §7.1)::

    <base>/<board>/<version>/<files>            release directory
    <base>/<board>/current -> <version>           relative symlink, swapped atomically with rename(2)
    <update_base>/<board>/<version>/flatcar_production_update.gz{,.sha256}
    <base>/<board>/.kiln-staging-<version>/       staging (hidden: the mirror role never serves dot paths)

Empty ``.kiln-staging-*`` directories are leftovers of interrupted runs: ``inspect`` (when it
prepares) and ``discard_empty`` remove them (other versions' only when older than STALE_SECONDS,
so a concurrent publish of another version never loses the directory it just made).
Every operation takes a JSON-able ``spec`` dict and returns a JSON-able dict, or raises MirrorError
with a one-line message.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
import time

STAGING_PREFIX = ".kiln-staging-"
PARTIAL_DIR = ".kiln-partial"
CURRENT = "current"
CHUNK = 1024 * 1024
# Written last into a version directory: a client that finds version.txt finds everything else.
LAST_FILES = ("version.txt",)
# An empty staging directory of another version this old is a leftover, not a publish in progress.
STALE_SECONDS = 3600
# How long discard_empty waits for an rsync receiver still working in a staging directory.
RECEIVER_SETTLE_SECONDS = 15


class MirrorError(Exception):
    """A mirror problem; the message is one line saying what to fix."""


def sha256_file(path):
    # _record.file_sha256 again, on purpose: this file runs alone on the mirror host (standard library only)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _fsync(path):
    """fsync a file or a directory (best effort: a file system without fsync on directories is no error)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_file(path, size, sha256, hash_it=True):
    """'ok', 'missing', 'not_a_file', 'size' or 'sha256' for one file against its expected identity."""
    try:
        if os.path.islink(path) or not os.path.isfile(path):
            return "missing" if not os.path.lexists(path) else "not_a_file"
        st = os.stat(path)
    except OSError:
        return "missing"
    if st.st_size != size:
        return "size"
    if hash_it and sha256_file(path) != sha256:
        return "sha256"
    return "ok"


def _ordered(files):
    """Manifest entries with LAST_FILES at the end (they make a version directory look complete)."""
    first = [f for f in files if f["name"] not in LAST_FILES]
    last = [f for f in files if f["name"] in LAST_FILES]
    return first + last


def _areas(spec):
    """[(area, final_dir, staging_dir, [files])] for the areas that have files."""
    out = []
    for area in ("update", "release"):  # update payloads land first, the release directory last
        info = spec.get("areas", {}).get(area)
        if not info:
            continue
        files = [f for f in spec["files"] if f["area"] == area]
        if files:
            out.append((area, info["final"], info["staging"], files))
    return out


def read_current(board_dir):
    """(kind, target): kind is 'symlink', 'missing' or 'other'."""
    link = os.path.join(board_dir, CURRENT)
    if os.path.islink(link):
        return "symlink", os.readlink(link).rstrip("/")
    if os.path.lexists(link):
        return "other", None
    return "missing", None


# -- operations ---------------------------------------------------------------------------------
def op_inspect(spec):
    """State of the final and staging directories against the manifest; creates staging if asked."""
    result = {"areas": {}, "current": None, "current_kind": None}
    hash_final = spec.get("hash_final", True)
    for area, final, staging, files in _areas(spec):
        state = {"final_exists": os.path.isdir(final), "final": {}, "staging": {}, "extra": []}
        if state["final_exists"]:
            for f in files:
                state["final"][f["name"]] = check_file(os.path.join(final, f["name"]), f["size"], f["sha256"], hash_final)
            names = set(f["name"] for f in files)
            state["extra"] = sorted(n for n in os.listdir(final) if n not in names)
        if os.path.isdir(staging):
            for f in files:
                state["staging"][f["name"]] = check_file(os.path.join(staging, f["name"]), f["size"], f["sha256"], False)
        if spec.get("prepare"):
            pending = [n for n, s in state["final"].items() if s != "ok"] if state["final_exists"] else [f["name"] for f in files]
            if pending:
                try:
                    os.makedirs(staging, exist_ok=True)
                except OSError as exc:
                    raise MirrorError("cannot create staging directory %s: %s" % (staging, exc.strerror or exc))
            elif os.path.isdir(staging) and not os.path.islink(staging):
                shutil.rmtree(staging, ignore_errors=True)  # everything is published: what staging holds is garbage
                state["staging"] = {}
        result["areas"][area] = state
    if spec.get("prepare"):
        result["discarded"] = _sweep(spec)
    if spec.get("board_dir"):
        result["current_kind"], result["current"] = read_current(spec["board_dir"])
    return result


def op_commit(spec):
    """Verify staging against the manifest, then make it visible under the version path.

    A missing version directory is created by renaming the whole staging directory (one atomic
    step). An existing one only gets the files it lacks, each renamed in, version.txt last; a file
    that exists with other content is never replaced ("version uniqueness").
    """
    done = {}
    for area, final, staging, files in _areas(spec):
        final_exists = os.path.isdir(final)
        pending = []
        conflicts = []
        for f in files:
            if final_exists:
                state = check_file(os.path.join(final, f["name"]), f["size"], f["sha256"])
                if state == "ok":
                    continue
                if state != "missing":
                    conflicts.append("%s (%s)" % (f["name"], state))
                    continue
            pending.append(f)
        if conflicts:
            raise MirrorError(
                "version uniqueness: %s already holds different %s; a published version is never overwritten: "
                "publish under a new version, or remove the version from the mirror by hand if it was never released"
                % (final, ", ".join(conflicts))
            )
        if not pending:
            done[area] = {"action": "present", "files": []}
            if os.path.isdir(staging):
                shutil.rmtree(staging, ignore_errors=True)
            continue
        bad = []
        for f in pending:
            path = os.path.join(staging, f["name"])
            state = check_file(path, f["size"], f["sha256"])
            if state != "ok":
                bad.append("%s (%s)" % (f["name"], state))
                if state in ("size", "sha256"):
                    try:
                        os.unlink(path)  # the rerun sends it again
                    except OSError:
                        pass
        if bad:
            raise MirrorError(
                "staged files on the mirror do not match the build record: %s; nothing was made visible, rerun to "
                "send them again" % ", ".join(bad)
            )
        for f in pending:
            _fsync(os.path.join(staging, f["name"]))
        names = set(f["name"] for f in files)
        if not final_exists:
            # Only the manifest's files may become visible: drop rsync leftovers first.
            for name in os.listdir(staging):
                if name not in names:
                    path = os.path.join(staging, name)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)
            _fsync(staging)
            try:
                os.rename(staging, final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise MirrorError("%s appeared while publishing (another publish of the same version?): rerun" % final)
                raise MirrorError("cannot rename %s to %s: %s" % (staging, final, exc.strerror or exc))
            _fsync(os.path.dirname(final))
            done[area] = {"action": "renamed", "files": [f["name"] for f in pending]}
        else:
            for f in _ordered(pending):
                os.rename(os.path.join(staging, f["name"]), os.path.join(final, f["name"]))
            _fsync(final)
            shutil.rmtree(staging, ignore_errors=True)
            done[area] = {"action": "merged", "files": [f["name"] for f in pending]}
    return {"areas": done}


def op_verify(spec):
    """Post-publish verify: every manifest file under the version path has the recorded size and sha256."""
    problems = []
    checked = 0
    for area, final, _staging, files in _areas(spec):
        if not os.path.isdir(final):
            problems.append("%s is missing" % final)
            continue
        for f in files:
            checked += 1
            state = check_file(os.path.join(final, f["name"]), f["size"], f["sha256"])
            if state != "ok":
                problems.append("%s/%s: %s" % (final, f["name"], {"sha256": "content differs from the build record",
                                                                  "size": "size differs from the build record"}.get(state, state)))
    current = None
    if spec.get("board_dir"):
        kind, current = read_current(spec["board_dir"])
        if spec.get("expect_current") and current != spec["expect_current"]:
            problems.append("%s/current points at %s, expected %s" % (spec["board_dir"], current, spec["expect_current"]))
        if kind == "symlink" and not os.path.isdir(os.path.join(spec["board_dir"], current)):
            problems.append("%s/current points at %s, which does not exist" % (spec["board_dir"], current))
    return {"checked": checked, "problems": problems, "current": current}


def op_set_current(spec):
    """Point <board_dir>/current at ``target`` with one rename(2); compare-and-swap on ``expect``."""
    board_dir = spec["board_dir"]
    target = spec["target"]
    if "/" in target or target in ("", ".", ".."):
        raise MirrorError("current must point at a version directory name, not %r" % target)
    if not os.path.isdir(os.path.join(board_dir, target)):
        raise MirrorError("%s/%s does not exist: refusing to point current at it" % (board_dir, target))
    kind, before = read_current(board_dir)
    if kind == "other":
        raise MirrorError("%s/current is not a symlink: move it aside so kiln can manage it" % board_dir)
    if before != spec.get("expect"):
        raise MirrorError("%s/current changed while publishing (now %s, expected %s): rerun" % (board_dir, before, spec.get("expect")))
    if before == target:
        return {"before": before, "after": target, "changed": False}
    tmp = os.path.join(board_dir, ".%s.kiln-tmp-%d" % (CURRENT, os.getpid()))
    try:
        os.unlink(tmp)
    except OSError:
        pass
    os.symlink(target, tmp)
    os.rename(tmp, os.path.join(board_dir, CURRENT))
    _fsync(board_dir)
    return {"before": before, "after": target, "changed": True}


def _rmdir_if_empty(path):
    try:
        os.rmdir(path)  # only succeeds on an empty directory: no race with a writer filling it
        return True
    except OSError:
        return False


def _sweep(spec):
    """Remove empty .kiln-staging-* leftovers: this release's at once, other versions' once stale."""
    removed = []
    own = set(staging for _area, _final, staging, _files in _areas(spec))
    now = time.time()
    for parent in spec.get("sweep_dirs") or []:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in sorted(names):
            path = os.path.join(parent, name)
            if not name.startswith(STAGING_PREFIX) or os.path.islink(path) or not os.path.isdir(path):
                continue
            if path in own:
                continue  # inspect is about to use it, discard_empty handles it at the end
            try:
                if now - os.lstat(path).st_mtime < STALE_SECONDS:
                    continue
            except OSError:
                continue
            if _rmdir_if_empty(path):
                removed.append(path)
    return removed


def _receivers(path):
    """Processes working in ``path``: an rsync receiver chdirs into its destination directory. Best effort (Linux /proc)."""
    found = []
    try:
        real = os.path.realpath(path)
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if name.isdigit():
            try:
                if os.readlink("/proc/%s/cwd" % name) == real:
                    found.append(int(name))
            except OSError:
                pass
    return found


def op_discard_empty(spec):
    """Remove this release's staging directories when they hold nothing (e.g. after a failed transfer).

    An rsync receiver that outlives the failed sender (it saves its partial file into PARTIAL_DIR when the connection
    drops) is waited for, up to ``settle_seconds``, so the partial work of a resume is never pulled from under it."""
    removed = []
    deadline = time.time() + float(spec.get("settle_seconds", RECEIVER_SETTLE_SECONDS))
    for _area, _final, staging, _files in _areas(spec):
        while os.path.isdir(staging) and _receivers(staging) and time.time() < deadline:
            time.sleep(0.1)
        partial = os.path.join(staging, PARTIAL_DIR)
        if os.path.isdir(partial) and not os.path.islink(partial):
            _rmdir_if_empty(partial)
        if os.path.isdir(staging) and not os.path.islink(staging) and _rmdir_if_empty(staging):
            removed.append(staging)
    return {"removed": removed}


OPS = {
    "inspect": op_inspect,
    "commit": op_commit,
    "verify": op_verify,
    "set_current": op_set_current,
    "discard_empty": op_discard_empty,
}


def run_op(op, spec):
    try:
        func = OPS[op]
    except KeyError:
        raise MirrorError("unknown mirror operation %r" % op)
    try:
        return func(spec)
    except MirrorError:
        raise
    except OSError as exc:
        raise MirrorError("%s failed on the mirror: %s: %s" % (op, getattr(exc, "filename", "") or "", exc.strerror or exc))


def main(request):
    """Entry point on the mirror host (through _hostxfer.remote_python_call): one op, answer as a dict."""
    try:
        return {"ok": True, "result": run_op(request["op"], request["spec"])}
    except MirrorError as exc:
        return {"ok": False, "error": str(exc)}


def own_source():
    """This file's source text, also when loaded from an AnsiballZ zip."""
    import inspect

    module = sys.modules[__name__]
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        loader = getattr(module, "__loader__", None)
        if loader is not None and hasattr(loader, "get_source"):
            text = loader.get_source(__name__)
            if text:
                return text
        raise
