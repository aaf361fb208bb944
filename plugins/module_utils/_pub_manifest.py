# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""kiln.flatcar.publish, part 1: the build record as read for a publish, the manifest, the layout.

* :func:`locate_record` finds the build record (through ``_stage.locate``) and :func:`release_of`
  validates what a publish takes from the record the publish stage opened: ``board`` (one of ``_record.BOARDS``), ``version.FLATCAR_VERSION`` (parsed with
  ``_version.FlatcarVersion``, canonical form only) and the shape of ``stages``.
* :func:`build_manifest` turns the outputs of the selected stages into :class:`PubFile` entries;
  every output path must be relative, without ``..``, and resolve inside the build root
  (``_safety.confine``); size and sha256 must be present and well-formed.
* :class:`Layout` is the frozen description of one release on one mirror (paths, files, current
  pointer) that the backends get; they never see or change the publisher.

Everything raises :class:`PublishError` with a one-line message.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Optional, Tuple

from ansible_collections.kiln.flatcar.plugins.module_utils._artifacts import role_of
from ansible_collections.kiln.flatcar.plugins.module_utils._mirror import STAGING_PREFIX
from ansible_collections.kiln.flatcar.plugins.module_utils._record import (
    BOARDS, file_sha256,
)
from ansible_collections.kiln.flatcar.plugins.module_utils._safety import UnsafePath, component, confine
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import locate
from ansible_collections.kiln.flatcar.plugins.module_utils._version import FlatcarVersion, VersionError

SIDECAR_SUFFIXES = (".DIGESTS.asc", ".DIGESTS", ".sig", ".asc", ".sha256")
PAYLOAD_ROLES = ("update_payload", "extension_payload")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
MAX_SIZE = 2 ** 63 - 1  # the largest file size (off_t)
CONTENT_TYPES = (
    (r"\.(txt|DIGESTS|asc|sha256|README|sh)$", "text/plain"),
    (r"\.json$", "application/json"),
)


class PublishError(Exception):
    """A publish problem. ``str()`` is one line; ``extra`` goes into fail_json next to it."""

    def __init__(self, msg, **extra):
        Exception.__init__(self, " ".join(str(msg).split()))
        self.extra = extra


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
    """An S3 key from parts ('/'-joined, no empty segments)."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


# -- the build record ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Release:
    """The build record a publish works from, validated."""

    record_path: str
    build_root: str
    board: str
    version: str
    data: dict = field(repr=False, compare=False)

    @property
    def stages(self):
        return self.data["stages"]


def locate_record(record_path, build_root, board, version):
    """The record's _stage.Location from the options: record_path (build root four directories above it unless
    given), or build_root + board + version (the version made canonical and safe as a path component)."""
    if record_path:
        return locate(record_path=record_path, build_root=build_root)
    if not (build_root and board and version):
        raise PublishError("give record_path, or build_root with board and version, to find the build record")
    return locate(build_root=build_root, board=board, version=parse_version(version, "version"))


def parse_version(text, what):
    """The canonical FLATCAR_VERSION of ``text``."""
    try:
        return component(FlatcarVersion.parse(text, what).version, what)
    except (VersionError, UnsafePath) as exc:
        raise PublishError(str(exc))


def release_of(data, path, build_root, want_board=None, want_version=None):
    """Validate the data of the build record at ``path`` (already loaded, e.g. by the publish stage): a Release."""
    board = data.get("board")
    if not isinstance(board, str) or board not in BOARDS:
        raise PublishError("build record %s names board %r: expected one of %s" % (path, board, ", ".join(sorted(BOARDS))))
    raw = (data.get("version") or {}).get("FLATCAR_VERSION") if isinstance(data.get("version"), dict) else None
    if not raw:
        raise PublishError("build record %s has no version.FLATCAR_VERSION: it was not written by kiln's build stages" % path)
    version = parse_version(raw, "version.FLATCAR_VERSION in build record %s" % path)
    if version != raw:
        raise PublishError("build record %s holds version.FLATCAR_VERSION %r, not the canonical %r: the record was edited by hand"
                           % (path, raw, version))
    if want_board and want_board != board:
        raise PublishError("build record %s is for board %s, not %s" % (path, board, want_board))
    if want_version and parse_version(want_version, "version") != version:
        raise PublishError("build record %s is for version %s, not %s" % (path, version, parse_version(want_version, "version")))
    if not isinstance(data.get("stages"), dict):
        raise PublishError("build record %s has stages %s instead of an object: the record is damaged, rerun the build stages"
                           % (path, _kind(data.get("stages"))))
    order = data.get("stage_order")
    if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
        raise PublishError("build record %s has no list of stage names in stage_order: the record is damaged" % path)
    return Release(path, build_root, board, version, data)


def _kind(value):
    return "null" if value is None else type(value).__name__


# -- the manifest ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PubFile:
    """One file to publish."""

    name: str
    area: str  # release or update
    size: int
    sha256: str
    role: str
    stage: str  # build-record stage, or "generated"
    source: str  # absolute path on this host
    rel: Optional[str] = None  # path relative to the build root (None for generated files)

    def spec(self):
        return {"name": self.name, "area": self.area, "size": self.size, "sha256": self.sha256}

    def public(self, status):
        return {"name": self.name, "area": self.area, "size": self.size, "sha256": self.sha256, "role": self.role,
                "stage": self.stage, "status": status}


def _selected(name, include, exclude):
    base = base_name(name)
    if not any(fnmatch.fnmatchcase(n, pat) for pat in include for n in (name, base)):
        return False
    return not any(fnmatch.fnmatchcase(n, pat) for pat in exclude for n in (name, base))


def output_file(release, sname, out):
    """A PubFile for one recorded output, after checking every field it takes from the record."""
    where = "build record %s stage %s" % (release.record_path, sname)
    if not isinstance(out, dict):
        raise PublishError("%s has an output that is not an object (%s): the record is damaged" % (where, _kind(out)))
    try:
        source = confine(release.build_root, out.get("path"), "output path")
        name = component(os.path.basename(out["path"]), "output file name")
    except UnsafePath as exc:
        raise PublishError("%s: %s; refusing to publish it" % (where, exc))
    size = out.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0 or size > MAX_SIZE:
        raise PublishError("%s output %s has %s size: the record is damaged, rerun stage %s"
                           % (where, out["path"], "no" if size is None else "an invalid (%r)" % (size,), sname))
    digest = out.get("sha256")
    if not isinstance(digest, str) or not SHA256_RE.match(digest):
        raise PublishError("%s output %s has %s sha256: the record is damaged, rerun stage %s"
                           % (where, out["path"], "no" if digest is None else "an invalid", sname))
    role = out.get("role") if isinstance(out.get("role"), str) else role_of(name)
    area = "update" if role_of(base_name(name)) in PAYLOAD_ROLES else "release"
    return PubFile(name, area, size, digest, role, sname, source, out["path"])


def _stage_files(release, stage_patterns, include, exclude):
    by_key = {}
    for sname in release.data["stage_order"]:
        if not any(fnmatch.fnmatchcase(sname, pat) for pat in stage_patterns):
            continue
        stage = release.stages.get(sname)
        if not isinstance(stage, dict) or stage.get("status") != "passed":
            continue
        outputs = stage.get("outputs") or []
        if not isinstance(outputs, list):
            raise PublishError("build record %s stage %s has outputs %s instead of a list: the record is damaged"
                               % (release.record_path, sname, _kind(outputs)))
        for out in outputs:
            entry = output_file(release, sname, out)
            if not _selected(entry.name, include, exclude):
                continue
            key = (entry.area, entry.name)
            if key in by_key:
                if by_key[key].sha256 != entry.sha256:
                    raise PublishError("stages %s and %s both record %s with different content: publish one of them "
                                       "(option stages/exclude)" % (by_key[key].stage, sname, entry.name))
                continue
            by_key[key] = entry
    return list(by_key.values())


def build_manifest(release, stage_patterns, include, exclude, gen_dir):
    """Every file to publish, sorted by (area, name); generated files are written under ``gen_dir``."""
    files = _stage_files(release, stage_patterns, include, exclude)
    if not any(f.area == "release" for f in files):
        raise PublishError("build record %s has nothing to publish for stages %s: run the build stages first"
                           % (release.record_path, ", ".join(stage_patterns)))
    check_payload_hashes(release, files)
    names = set((f.area, f.name) for f in files)
    for f in list(files):
        if f.area == "update" and role_of(f.name) in PAYLOAD_ROLES and ("update", f.name + ".sha256") not in names:
            files.append(_generated(gen_dir, "update", f.name + ".sha256", "%s  %s\n" % (f.sha256, f.name)))
    if ("release", "version.txt") not in names:
        files.append(_generated(gen_dir, "release", "version.txt", _version_txt(release)))
    return tuple(sorted(files, key=lambda f: (f.area, f.name)))


def _version_txt(release):
    """version.txt from the validated version, never from free-form record text."""
    v = FlatcarVersion.parse(release.version)
    lines = ["FLATCAR_VERSION=%s" % v.version, "FLATCAR_VERSION_ID=%s" % v.version_id, 'FLATCAR_BUILD_ID="%s"' % v.build_id]
    sdk = (release.data.get("version") or {}).get("FLATCAR_SDK_VERSION")
    if sdk:
        lines.append("FLATCAR_SDK_VERSION=%s" % parse_version(sdk, "version.FLATCAR_SDK_VERSION"))
    return "\n".join(lines) + "\n"


def _generated(gen_dir, area, name, text):
    directory = os.path.join(gen_dir, area)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, name)
    data = text.encode("utf-8")
    with open(path, "wb") as fh:
        fh.write(data)
    return PubFile(name, area, len(data), hashlib.sha256(data).hexdigest(), role_of(name), "generated", path)


def check_payload_hashes(release, files):
    """The payload stage's own hashes (details.payloads[] from kiln.flatcar.update_payload, or a flat
    details.sha256_hex for the main payload) must agree with the files about to be published."""
    stage = release.stages.get("payload")
    details = stage.get("details") if isinstance(stage, dict) else None
    details = details if isinstance(details, dict) else {}
    payloads = details.get("payloads") if isinstance(details.get("payloads"), list) else []
    want = dict((pl.get("name"), pl.get("sha256_hex")) for pl in payloads if isinstance(pl, dict))
    if details.get("sha256_hex"):
        want.setdefault("flatcar_production_update.gz", details["sha256_hex"])
    for f in files:
        if f.area == "update" and want.get(f.name) and want[f.name] != f.sha256:
            raise PublishError("payload stage records sha256 %s for %s but the file has %s: rerun the payload stage"
                               % (want[f.name], f.name, f.sha256))


def check_sources(files):
    """Fail when a source file no longer has the size and sha256 the record holds."""
    problems = []
    for f in files:
        if f.rel is None:
            continue
        try:
            st = os.stat(f.source)
        except OSError:
            problems.append("%s is missing" % f.rel)
            continue
        if st.st_size != f.size:
            problems.append("%s changed size since stage %s" % (f.rel, f.stage))
        elif file_sha256(f.source) != f.sha256:
            problems.append("%s changed content since stage %s" % (f.rel, f.stage))
    if problems:
        raise PublishError("source files differ from the build record: %s; rerun the stages that wrote them" % "; ".join(problems[:5]))


# -- the layout -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """One release on one mirror: where every area lives, the files, the current pointer. Immutable."""

    base: str
    board: str
    version: str
    board_dir: str
    current: str
    release_final: str
    release_staging: str
    update_board_dir: str
    update_final: str
    update_staging: str
    files: Tuple[PubFile, ...]

    @classmethod
    def build(cls, join, base, update_base, board, version, files):
        update_base = update_base or join(base, "update")
        return cls(base=base, board=board, version=version, board_dir=join(base, board), current=join(base, board, "current"),
                   release_final=join(base, board, version), release_staging=join(base, board, STAGING_PREFIX + version),
                   update_board_dir=join(update_base, board), update_final=join(update_base, board, version),
                   update_staging=join(update_base, board, STAGING_PREFIX + version), files=tuple(files))

    @property
    def has_update(self):
        return any(f.area == "update" for f in self.files)

    def final(self, area):
        return self.release_final if area == "release" else self.update_final

    def staging(self, area):
        return self.release_staging if area == "release" else self.update_staging

    def version_txt(self):
        return next((f for f in self.files if f.area == "release" and f.name == "version.txt"), None)

    def spec(self, **extra):
        """The request of a _mirror operation."""
        areas = {"release": {"final": self.release_final, "staging": self.release_staging}}
        sweep = [self.board_dir]
        if self.has_update:
            areas["update"] = {"final": self.update_final, "staging": self.update_staging}
            sweep.append(self.update_board_dir)
        spec = {"board_dir": self.board_dir, "areas": areas, "files": [f.spec() for f in self.files], "sweep_dirs": sweep}
        spec.update(extra)
        return spec
