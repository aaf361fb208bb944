# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Hotfix planning: what a hotfix of a released version pins, and which version it gets.

A hotfix of release ``R`` (a FLATCAR_VERSION kiln built, e.g. ``4593.2.5``) is ``R+hotfix-<n>``: the build id
``hotfix-<n>``; when ``R`` has a build id ``B`` (``4593.2.5+B``) the hotfix is ``R-hotfix-<n>`` (build id
``B-hotfix-<n>``): one ``+`` only, so the version stays valid SemVer build metadata (Nebraska and update clients
compare versions), a Docker-safe suffix and a word for the SDK's disk tools. ``n`` is one more than the highest
``n`` any known version uses, so a published (or merely built) hotfix version is never reused.

The release's build record is the source of truth for what the hotfix pins (:func:`pins`): the scripts
repository and base commit (before the release's patches), the release's patches (each must still have the
sha256 the release recorded), its mods, its SDK version, and the flags of its packages and image stages.
"""

from __future__ import annotations

import os
import re

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, RecordError, file_sha256, record_path

MAX_HOTFIX = 999999


class HotfixError(Exception):
    """A hotfix cannot be planned; the message says what to fix."""


def hotfix_build_id(release_build_id, n):
    """FLATCAR_BUILD_ID of hotfix ``n`` of a release whose build id is ``release_build_id`` ('' for none)."""
    if not isinstance(n, int) or not 0 < n <= MAX_HOTFIX:
        raise HotfixError("hotfix number %r is out of range 1..%d" % (n, MAX_HOTFIX))
    return ("%s-hotfix-%d" % (release_build_id, n)) if release_build_id else "hotfix-%d" % n


def hotfix_number(release, version):
    """``n`` when ``version`` is hotfix ``n`` of ``release`` (``<release>+hotfix-<n>``, or ``<release>-hotfix-<n>``
    when the release has a build id), else None."""
    sep = r"-" if "+" in (release or "") else r"\+"
    m = re.match(re.escape(release) + sep + r"hotfix-([1-9][0-9]{0,5})\Z", version or "")
    return int(m.group(1)) if m else None


def next_number(release, versions):
    """One more than the highest hotfix number of ``release`` among ``versions`` (1 when there is none)."""
    taken = [n for n in (hotfix_number(release, v) for v in versions) if n is not None]
    nxt = max(taken) + 1 if taken else 1
    if nxt > MAX_HOTFIX:
        raise HotfixError("release %s already has hotfix %d, the last number kiln gives" % (release, MAX_HOTFIX))
    return nxt


def recorded_versions(build_root, board):
    """Versions with a build record under ``<build_root>/kiln/<board>/`` (built here, published or not)."""
    top = os.path.join(build_root, "kiln", board)
    try:
        names = os.listdir(top)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HotfixError("cannot list %s: %s" % (top, exc.strerror))
    return sorted(n for n in names if os.path.isfile(os.path.join(top, n, "build-record.json")))


def _stage_inputs(data, name):
    stage = (data.get("stages") or {}).get(name) or {}
    if stage.get("status") != "passed":
        return None
    inputs = stage.get("inputs")
    return inputs if isinstance(inputs, dict) else None


def check_patches(paths):
    """The hotfix's patches: absolute paths of readable regular files (HotfixError with one line otherwise)."""
    for i, path in enumerate(paths or []):
        if not isinstance(path, str) or not os.path.isabs(path) or any(ord(c) < 32 for c in path):
            raise HotfixError("patches[%d] %r is not an absolute path on the builder" % (i, str(path)[:200]))
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise HotfixError("patch %s is not a readable file on this builder: copy it there first (docs/hotfix.md)" % path)


def _release_patches(source, where):
    """The release's patches, each still on disk with the recorded sha256."""
    out = []
    for i, patch in enumerate(source.get("patches") or []):
        path = patch.get("path") if isinstance(patch, dict) else None
        want = patch.get("sha256") if isinstance(patch, dict) else None
        if not isinstance(path, str) or not os.path.isabs(path) or not isinstance(want, str):
            raise HotfixError("%s: source.patches[%d] has no absolute path and sha256: the record is damaged" % (where, i))
        try:
            have = file_sha256(path)
        except OSError as exc:
            raise HotfixError("release patch %s is gone (%s): restore it from the IaC repo at the release's commit"
                              % (path, exc.strerror))
        if have != want.split(":")[-1]:
            raise HotfixError("release patch %s changed since the release (sha256 %s, release had %s): restore the "
                              "released file; put the fix in a hotfix patch or mod instead" % (path, have[:12], want[:19]))
        out.append(path)
    return out


def pins(build_root, board, release):
    """What a hotfix of ``release`` on ``board`` pins, from the release's build record here (read only)."""
    rel = _validate.version(release, "release", canonical=True)
    _validate.board(board)
    path = record_path(build_root, board, rel.version)
    try:
        rec = BuildRecord.open(path, board=board, create=False, read_only=True)
    except RecordError as exc:
        raise HotfixError("release %s has no usable build record on this host: %s" % (rel.version, exc))
    data = rec.data
    source = data.get("source") or {}
    version = data.get("version") or {}
    if version.get("FLATCAR_VERSION") != rel.version:
        raise HotfixError("build record %s holds version %r, not release %s" % (path, version.get("FLATCAR_VERSION"), rel.version))
    for key in ("repo", "base_commit", "commit"):
        if not isinstance(source.get(key), str) or not source[key]:
            raise HotfixError("build record %s has no source.%s: the release was not checked out by kiln" % (path, key))
    _validate.git_repo(source["repo"], "source.repo of the release record")
    _validate.git_ref(source["base_commit"], "source.base_commit of the release record")
    packages = _stage_inputs(data, "packages")
    image = _stage_inputs(data, "image")
    if packages is None or image is None:
        raise HotfixError("release %s on %s has no passed packages and image stages in %s: hotfix a release kiln built "
                          "completely" % (rel.version, board, path))
    return {
        "record_path": path,
        "release": rel.version,
        "release_build_id": rel.build_id or "",
        "version_id": rel.version_id,
        "sdk_version": version.get("FLATCAR_SDK_VERSION") or rel.version_id,
        "channel": version.get("channel"),
        "repo": source["repo"],
        "ref": source.get("ref"),
        "base_commit": source["base_commit"],
        "commit": source["commit"],
        "patches": _release_patches(source, path),
        "mods": source.get("mods") or [],
        "packages_flags": packages.get("flags") or [],
        "image_flags": image.get("flags") or [],
        "image_types": image.get("image_types") or [],
        "sdk_image": (packages.get("sdk_image") or {}).get("ref"),
        "scripts_commit": packages.get("scripts_commit"),
    }


def plan(build_root, board, release, known_versions=()):
    """The pins of :func:`pins` plus the next hotfix number given the versions known here and elsewhere."""
    out = pins(build_root, board, release)
    known = sorted(set(recorded_versions(build_root, board)) | set(known_versions or ()))
    out["existing_hotfixes"] = [v for v in known if hotfix_number(out["release"], v) is not None]
    out["next_number"] = next_number(out["release"], known)
    out["next_build_id"] = hotfix_build_id(out["release_build_id"], out["next_number"])
    out["next_version"] = "%s+%s" % (out["version_id"], out["next_build_id"])
    return out
