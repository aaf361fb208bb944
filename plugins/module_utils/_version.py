# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Flatcar version strings and ``version.txt``, with the semantics of the SDK's
``sdk_lib/sdk_container_common.sh`` (``build_id_from_version``, ``vernum_from_version``,
``strip_version_prefix``, ``channel_from_version``, ``is_official``, ``create_versionfile``).
"""

from __future__ import annotations

import os
import re
import tempfile

VERSIONFILE = "sdk_container/.repo/manifests/version.txt"
CHANNELS = ("alpha", "beta", "stable", "lts")
# Tag prefixes Flatcar's CI accepts (check_version_string); "main" is a nightly branch prefix.
TAG_PREFIXES = ("main",) + CHANNELS

# at most 9 digits per part (int() stays cheap, a version stays a usable path component)
_VERNUM = r"[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}"
# the longest version string kiln takes (the schema's flatcar_version maxLength)
MAX_VERSION_LEN = 160
# optional lower-case prefix "<word>-", the M.m.p vernum, optional build id after '-' or '+'
_VERSION_RE = re.compile(r"^(?:(?P<prefix>[a-z]+)-)?(?P<vernum>" + _VERNUM + r")(?:[-+](?P<build>.+))?\Z")
_BUILD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
_LINE_RE = re.compile(r'^([A-Z_][A-Z0-9_]*)=(.*)$')
# A binhost URL that is safe inside version.txt, which the SDK sources as shell (common.sh
# load_environment_var, sdk_entry.sh): a scheme, then no whitespace, quotes or shell metacharacters.
_BINHOST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9._~:/?#\[\]@!%+,=-]+\Z")


def check_binhost_root(url):
    """The FLATCAR_DEV_BUILDS value for a binary package cache root URL (trailing '/' removed), or VersionError.

    setup_board makes PORTAGE_BINHOST ``$FLATCAR_DEV_BUILDS/boards/<board>/<version>/pkgs/``
    (build_library/toolchain_util.sh get_board_binhost), so this is the cache root, not a pkgs/ URL."""
    text = "" if url is None else str(url)
    if not _BINHOST_RE.fullmatch(text):
        raise VersionError(
            "binhost %r cannot go into version.txt (the SDK sources it as shell): give a URL such as "
            "http://cache.example:8080 without spaces, quotes, ';', '$', '&', '|' or newlines" % text
        )
    root = text.rstrip("/")
    if re.search(r"/boards/[^/]+/[^/]+/pkgs$", root):
        raise VersionError(
            "binhost %r is a pkgs/ URL: give the cache root (the part before /boards/); setup_board appends "
            "/boards/<board>/<version>/pkgs/ itself" % text
        )
    return root


class VersionError(ValueError):
    """A malformed version string or version file; the message is one line saying what to fix."""


class FlatcarVersion:
    """A parsed Flatcar OS (or SDK) version."""

    __slots__ = ("text", "prefix", "version_id", "build_id")

    def __init__(self, text, prefix, version_id, build_id):
        self.text = text
        self.prefix = prefix
        self.version_id = version_id
        self.build_id = build_id

    @classmethod
    def parse(cls, text, what="version"):
        if text is None:
            raise VersionError("%s is missing: give a Flatcar version such as stable-4593.2.5 or 4593.2.5+hotfix-1" % what)
        text = str(text).strip()
        if len(text) > MAX_VERSION_LEN:
            raise VersionError("malformed %s %r...: longer than %d characters" % (what, text[:40], MAX_VERSION_LEN))
        match = _VERSION_RE.match(text)
        if not match:
            raise VersionError(
                "malformed %s %r: expected [<channel>-]MAJOR.MINOR.PATCH[-<build id>|+<build id>], "
                "e.g. stable-4593.2.5, main-4799.0.0-nightly-20260821-2100 or 4593.2.5+hotfix-1" % (what, text)
            )
        build = match.group("build") or ""
        if build and not _BUILD_ID_RE.match(build):
            raise VersionError("malformed build id %r in %s %r: use letters, digits, '.', '_', '+' and '-'" % (build, what, text))
        return cls(text, match.group("prefix") or "", match.group("vernum"), build)

    @classmethod
    def from_parts(cls, version_id, build_id=""):
        text = version_id + ("+" + build_id if build_id else "")
        return cls.parse(text)

    @property
    def version(self):
        """FLATCAR_VERSION: the vernum plus ``+<build id>`` for non-official builds (strip_version_prefix)."""
        return self.version_id + ("+" + self.build_id if self.build_id else "")

    @property
    def channel(self):
        """channel_from_version: alpha/beta/stable/lts, anything else is 'developer'."""
        return self.prefix if self.prefix in CHANNELS else "developer"

    @property
    def official(self):
        """is_official: a plain MAJOR.MINOR.PATCH without build id."""
        return not self.build_id

    @property
    def docker_vernum(self):
        """vernum_to_docker_image_version: '+' becomes '-'."""
        return self.version.replace("+", "-")

    @property
    def major(self):
        return int(self.version_id.split(".")[0])

    def key(self):
        """A sort key: numeric vernum, then build id (official sorts after its builds)."""
        nums = tuple(int(x) for x in self.version_id.split("."))
        return nums + ((1, "") if not self.build_id else (0, self.build_id))

    def as_dict(self):
        return {
            "input": self.text,
            "FLATCAR_VERSION": self.version,
            "FLATCAR_VERSION_ID": self.version_id,
            "FLATCAR_BUILD_ID": self.build_id,
            "channel": self.channel,
            "official": self.official,
            "docker_vernum": self.docker_vernum,
        }

    def __str__(self):
        return self.version

    def __repr__(self):
        return "FlatcarVersion(%r)" % self.text


def compare(a, b):
    """-1, 0 or 1 comparing two version strings (or FlatcarVersion objects)."""
    ka = (a if isinstance(a, FlatcarVersion) else FlatcarVersion.parse(a)).key()
    kb = (b if isinstance(b, FlatcarVersion) else FlatcarVersion.parse(b)).key()
    return (ka > kb) - (ka < kb)


def read_versionfile(path):
    """Parse a version.txt (shell assignments) into a dict; raise VersionError on garbage."""
    values = {}
    try:
        with open(path, "r", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise VersionError("cannot read %s: %s" % (path, exc.strerror or exc))
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE_RE.match(line)
        if not match:
            raise VersionError("%s line %d is not a NAME=value assignment: %r" % (path, lineno, raw))
        value = match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[match.group(1)] = value
    if "FLATCAR_VERSION" not in values:
        raise VersionError("%s has no FLATCAR_VERSION line: is this a Flatcar scripts checkout?" % path)
    return values


def versionfile_content(os_version, sdk_version, extra=None):
    """The text create_versionfile writes for an OS version and an SDK version."""
    osv = os_version if isinstance(os_version, FlatcarVersion) else FlatcarVersion.parse(os_version)
    sdk = sdk_version if isinstance(sdk_version, FlatcarVersion) else FlatcarVersion.parse(sdk_version, "SDK version")
    lines = [
        "FLATCAR_VERSION=%s" % osv.version,
        "FLATCAR_VERSION_ID=%s" % osv.version_id,
        'FLATCAR_BUILD_ID="%s"' % osv.build_id,
        "FLATCAR_SDK_VERSION=%s" % sdk.version,
    ]
    # common.sh also reads the binhost location from version.txt: the cleanest way to point a
    # custom build at a private binary package cache.
    # common.sh reads them only when FLATCAR_BUILD_ID is not in the environment (kiln's SDK stages leave
    # it to version.txt). Validated and quoted: the SDK sources this file as shell.
    for key in ("FLATCAR_DEV_BUILDS", "FLATCAR_DEV_BUILDS_SDK"):
        if extra and extra.get(key):
            lines.append('%s="%s"' % (key, check_binhost_root(extra[key])))
    return "\n".join(lines) + "\n"


def atomic_write(path, data, mode=0o644):
    """Write ``data`` (str or bytes) to ``path`` atomically: temp file, fsync, rename, fsync dir."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
