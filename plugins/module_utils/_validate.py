# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""One validator per kind of untrusted value (docs/design.md "Security").

Every value that comes from an option, the inventory or a build record is untrusted where it enters a
module. Each kind has exactly one function here; it returns the value to use (normalised where the kind has
a canonical form) or raises ``Invalid`` with one line saying what to fix. Paths are the business of
``_safety`` (``confine``, ``component``); ``file_name`` and ``remote_path`` below build on it.

``check(module, validator, value, ...)`` turns ``Invalid`` into ``module.fail_json(msg=<one line>)``.
"""

from __future__ import annotations

import re

from ansible_collections.kiln.flatcar.plugins.module_utils._record import BOARDS
from ansible_collections.kiln.flatcar.plugins.module_utils._safety import UnsafePath, component
from ansible_collections.kiln.flatcar.plugins.module_utils._version import CHANNELS, FlatcarVersion, VersionError

# A host name, IPv4 or [IPv6] address as ssh takes it; never an option (no leading '-').
HOST_RE = re.compile(r"^[A-Za-z0-9_\[][A-Za-z0-9_.:%\[\]-]*\Z")
# A POSIX-ish login name.
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
# Plain words for a program run on another host (``sudo rsync``, ``/usr/bin/python3``): no shell syntax at all.
COMMAND_RE = re.compile(r"^[A-Za-z0-9_./=+-]+( [A-Za-z0-9_./=+-]+)*\Z")
# A Docker/Podman container name (the engines' own rule).
CONTAINER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
# A container image repository path without tag or digest (the distribution reference grammar, lowercase):
# host[:port] then '/'-separated path components; never an option (no leading '-'), never '..'.
REGISTRY_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*\Z")
# An update group (build_image --group) and similar short identifiers.
GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
# A build id (FLATCAR_BUILD_ID): the same rule the version parser applies to the part after '+'.
BUILD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
# An http(s) URL without whitespace, quotes or shell metacharacters.
URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://[A-Za-z0-9._~:/?#\[\]@!%+,=-]+\Z")
# A git ref name (tag, branch, commit id); git check-ref-format rules that matter for argv safety.
GIT_REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]*\Z")
# A path on another host: characters no shell interprets (rsync before 3.2.4 passes remote paths to a shell).
REMOTE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+@%:=,-]*\Z")
# An ssh -o value: Name=value, nothing ssh would read as another option or line.
SSH_OPTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*[ =]\S.*\Z")
# Gentoo package names (PMS 3.1.1 category, 3.1.2 package name) and versions (PMS 3.2; -rN is the revision).
CATEGORY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9+_.-]*\Z")
PN_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9+_-]*\Z")
PMS_VERSION = r"[0-9]+(?:\.[0-9]+)*[a-z]?(?:_(?:alpha|beta|pre|rc|p)[0-9]*)*(?:-r[0-9]+)?"
PMS_VERSION_RE = re.compile(r"^" + PMS_VERSION + r"\Z")
# <pn>-<version>.ebuild: the package name is what comes before the last '-<version>'
EBUILD_FILE_RE = re.compile(r"^(?P<pn>[A-Za-z0-9_][A-Za-z0-9+_-]*?)-(?P<version>" + PMS_VERSION + r")\.ebuild\Z")
# A package dependency specification as profiles' package.use/.accept_keywords/.mask take it (PMS 8.3): optional
# version operator (then a version, '=' also with a trailing '*'), category/name, optional :slot and ::repository.
ATOM_RE = re.compile(r"^(?P<op><=|>=|<|>|=|~)?(?P<cat>[A-Za-z0-9_][A-Za-z0-9+_.-]*)/(?P<rest>[A-Za-z0-9_][A-Za-z0-9+_.*-]*)"
                     r"(?::[A-Za-z0-9_][A-Za-z0-9+_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9+_.-]*)?)?(?:::[A-Za-z0-9_][A-Za-z0-9_-]*)?\Z")
# A USE flag (PMS 3.1.4), '-' in front to disable it.
USE_FLAG_RE = re.compile(r"^-?[A-Za-z0-9][A-Za-z0-9+_@-]*\Z")
# A KEYWORDS entry for package.accept_keywords: arch, ~arch, '*', '~*', '**' or '-' forms (PMS 5.3.5).
KEYWORD_RE = re.compile(r"^(?:\*\*|~?\*|[-~]?[A-Za-z0-9][A-Za-z0-9_-]*)\Z")
# A kernel configuration line: CONFIG_<NAME>=y|m|n|"string"|number (decimal or 0x hex), as in a defconfig.
KCONFIG_RE = re.compile(r'^(?P<name>CONFIG_[A-Za-z0-9_]+)=(?P<value>[ymn]|"[^"\\\x00-\x1f]*"|-?[0-9]+|0x[0-9A-Fa-f]+)\Z')


class Invalid(ValueError):
    """An untrusted value that may not be used; the message is one line."""


def _one_line(text):
    return " ".join(str(text).split())


def version(value, what="version", canonical=False):
    """A parsed ``_version.FlatcarVersion``.

    ``canonical`` demands the FLATCAR_VERSION form (``4593.2.5`` or ``4593.2.5+kiln-1``, no channel prefix): the form
    used as a path component (build records, the cache, locks) and the one RV(version.FLATCAR_VERSION) of
    sdk_checkout returns."""
    try:
        parsed = FlatcarVersion.parse(value, what)
    except VersionError as exc:
        raise Invalid(_one_line(exc))
    if canonical and parsed.text != parsed.version:
        raise Invalid("%s %r is not a FLATCAR_VERSION: give %r (the version.FLATCAR_VERSION kiln.flatcar.sdk_checkout returns)"
                      % (what, parsed.text, parsed.version))
    return parsed


def board(value, what="board"):
    """One of ``_record.BOARDS``."""
    if not isinstance(value, str) or value not in BOARDS:
        raise Invalid("unknown %s %r: use one of %s" % (what, value, ", ".join(sorted(BOARDS))))
    return value


def group(value, what="group"):
    """An update group name (build_image ``--group``, Nebraska group)."""
    if not isinstance(value, str) or not GROUP_RE.match(value):
        raise Invalid("%s %r is not a valid update group name: use letters, digits, '.', '_' and '-'" % (what, value))
    return value


def identifier(value, what="name"):
    """A short name that also becomes a file name and a stage name (sysext name, publish target name)."""
    if not isinstance(value, str) or not GROUP_RE.match(value):
        raise Invalid("%s %r is invalid: use letters, digits, '.', '_' and '-', starting with a letter or digit" % (what, value))
    return value


def channel(value, what="channel", developer=False):
    """A Flatcar release channel (``alpha``, ``beta``, ``stable``, ``lts``; ``developer`` when allowed)."""
    allowed = CHANNELS + (("developer",) if developer else ())
    if not isinstance(value, str) or value not in allowed:
        raise Invalid("unknown %s %r: use one of %s" % (what, value, ", ".join(allowed)))
    return value


def container_name(value, what="container_name"):
    """A Docker/Podman container name."""
    if not isinstance(value, str) or not CONTAINER_RE.match(value):
        raise Invalid("%s %r is not a container name: use letters, digits, '.', '_' and '-', starting with a letter or digit"
                      % (what, value))
    return value


def registry(value, what="sdk_registry"):
    """A container image repository prefix such as ``ghcr.io/flatcar`` (no tag, no digest, no '..'); trailing '/' dropped."""
    text = value.rstrip("/") if isinstance(value, str) else value
    if not isinstance(text, str) or not REGISTRY_RE.match(text) or ".." in text or len(text) > 200:
        raise Invalid("%s %r is not a container repository path (lowercase host[:port]/path, no tag): e.g. ghcr.io/flatcar"
                      % (what, _one_line(value)))
    return text


def host(value, what="host"):
    """A host name or address for ssh; never something ssh would read as an option."""
    if not isinstance(value, str) or not HOST_RE.match(value):
        raise Invalid("%s %r is not a host name or address" % (what, value))
    return value


def user(value, what="ssh_user"):
    """A login name."""
    if not isinstance(value, str) or not USER_RE.match(value):
        raise Invalid("%s %r is not a user name" % (what, value))
    return value


def build_id(value, what="build_id"):
    """A FLATCAR_BUILD_ID (letters, digits, '.', '_', '+', '-'; not starting with a separator)."""
    if not isinstance(value, str) or not BUILD_ID_RE.match(value):
        raise Invalid("malformed %s %r: use letters, digits, '.', '_', '+' and '-', starting with a letter or digit" % (what, value))
    return value


def url(value, what="url", schemes=("http", "https")):
    """A URL with one of ``schemes`` and no whitespace, quotes or shell metacharacters."""
    match = URL_RE.match(value) if isinstance(value, str) else None
    if not match or match.group("scheme").lower() not in schemes:
        raise Invalid("%s %r is not a %s URL without spaces, quotes or shell metacharacters"
                      % (what, value, "/".join(schemes)))
    return value


def file_name(value, what="name"):
    """One plain path component (``_safety.component``)."""
    try:
        return component(value, what)
    except UnsafePath as exc:
        raise Invalid(str(exc))


def remote_path(value, what="path"):
    """An absolute path on another host, in characters no remote shell interprets, without '..' components."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise Invalid("%s %r is not an absolute path" % (what, value))
    if not REMOTE_PATH_RE.match(value) or ".." in value.split("/"):
        raise Invalid("%s %r: use letters, digits and '/._+@%%:=,-' only (older rsync hands remote paths to a shell), "
                      "no '..'" % (what, value))
    return value.rstrip("/") or "/"


def command(value, what="command"):
    """A program (with plain leading words such as ``sudo``) run on another host: no shell syntax."""
    if not isinstance(value, str) or not COMMAND_RE.match(value) or value.startswith("-") \
            or any(".." in word.split("/") for word in value.split()):
        raise Invalid("%s %r: use a program path, optionally after plain words such as sudo, without shell syntax, "
                      "a leading '-' or '..'" % (what, value))
    return value


def ssh_option(value, what="ssh option"):
    """An ``ssh -o`` value (``Name=value``)."""
    if not isinstance(value, str) or not SSH_OPTION_RE.match(value) or "\n" in value:
        raise Invalid("%s %r is not an ssh -o Name=value option" % (what, value))
    return value


def git_ref(value, what="ref"):
    """A tag, branch or commit name for git: never an option, no revision syntax, no whitespace."""
    if not isinstance(value, str) or not GIT_REF_RE.match(value) or ".." in value or value.endswith((".lock", "/", ".")) \
            or "@{" in value:
        raise Invalid("%s %r is not a tag, branch or commit name (letters, digits, '.', '_', '/', '+', '-'; not starting "
                      "with '-', no '..')" % (what, value))
    return value


def git_repo(value, what="repo"):
    """A git repository: an http(s)/ssh/git/file URL, ``user@host:path`` or an absolute local path; never an option and
    never a command transport (``ext::``, ``fd::``)."""
    text = value if isinstance(value, str) else ""
    bad = not text or text.startswith("-") or any(c in text for c in "\0\n\r") or "::" in text.split("/", 1)[0]
    if not bad and "://" in text:
        bad = text.split("://", 1)[0].lower() not in ("https", "http", "ssh", "git", "file")
    elif not bad:
        bad = not (text.startswith("/") or re.match(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:", text))
    if bad:
        raise Invalid("%s %r is not a git repository URL (https://, ssh://, git://, file://, user@host:path) or absolute path"
                      % (what, value))
    return value


def package_name(value, what="package"):
    """``<category>/<name>`` of a Gentoo package (PMS 3.1.1, 3.1.2); no version, slot or operator."""
    parts = value.split("/") if isinstance(value, str) else []
    if len(parts) != 2 or not CATEGORY_RE.match(parts[0]) or not PN_RE.match(parts[1]) or _ends_like_version(parts[1]):
        raise Invalid("%s %r is not a package name: give <category>/<name>, e.g. app-misc/jq (letters, digits, '+', '_', '-')"
                      % (what, value))
    return value


def _ends_like_version(pn):
    """PMS 3.1.2: a package name may not end in a hyphen followed by something that is a valid version."""
    return any(PMS_VERSION_RE.match(pn[i + 1:]) for i, c in enumerate(pn) if c == "-")


def ebuild_file(value, what="ebuild"):
    """``(pn, version)`` of an ebuild file name ``<pn>-<version>[-rN].ebuild`` (PMS 3.1.2, 3.2)."""
    match = EBUILD_FILE_RE.match(value) if isinstance(value, str) else None
    if not match or _ends_like_version(match.group("pn")):
        raise Invalid("%s file name %r is not <name>-<version>[-rN].ebuild (PMS version rules, e.g. hello-1.2.3-r1.ebuild)"
                      % (what, value))
    return match.group("pn"), match.group("version")


def package_atom(value, what="atom"):
    """A package dependency specification for profile files: ``[op]<category>/<name>[-<version>][:slot][::repo]``."""
    match = ATOM_RE.match(value) if isinstance(value, str) else None
    ok = bool(match)
    if ok:
        rest = match.group("rest")
        if match.group("op"):
            star = match.group("op") == "=" and rest.endswith("*")
            m = EBUILD_FILE_RE.match((rest[:-1] if star else rest) + ".ebuild")
            ok = bool(m) and not _ends_like_version(m.group("pn"))
        else:
            ok = "*" not in rest and PN_RE.match(rest) is not None and not _ends_like_version(rest)
    if not ok:
        raise Invalid("%s %r is not a package atom: give <category>/<name> or an operator with a version, e.g. app-misc/jq, "
                      ">=app-misc/jq-1.7, =app-misc/jq-1.7*, optionally :slot and ::repo" % (what, value))
    return value


SET_RE = re.compile(r"^@[A-Za-z0-9_][A-Za-z0-9+_.-]*\Z")


def package_target(value, what="package"):
    """What emerge takes as a target: a package atom (``package_atom``) or a set such as ``@system``."""
    if isinstance(value, str) and SET_RE.match(value):
        return value
    try:
        return package_atom(value, what)
    except Invalid:
        raise Invalid("%s %r is not a package atom or a set: give <category>/<name> (e.g. app-misc/jq, >=app-misc/jq-1.7) or "
                      "@<set> (e.g. @system)" % (what, value))


def atom_package(value, what="atom"):
    """The ``<category>/<name>`` an atom names (validated with ``package_atom``)."""
    package_atom(value, what)
    match = ATOM_RE.match(value)
    rest = match.group("rest")
    if match.group("op"):
        rest = EBUILD_FILE_RE.match(rest.rstrip("*") + ".ebuild").group("pn")
    return "%s/%s" % (match.group("cat"), rest)


def use_flag(value, what="USE flag"):
    """A USE flag, optionally ``-flag`` (PMS 3.1.4)."""
    if not isinstance(value, str) or not USE_FLAG_RE.match(value):
        raise Invalid("%s %r is invalid: letters, digits, '+', '_', '@', '-', starting with a letter or digit ('-' to disable)"
                      % (what, value))
    return value


def keyword(value, what="keyword"):
    """A keyword for package.accept_keywords (``amd64``, ``~arm64``, ``**``)."""
    if not isinstance(value, str) or not KEYWORD_RE.match(value):
        raise Invalid("%s %r is invalid: give an arch keyword such as amd64 or ~arm64, or '**'" % (what, value))
    return value


def kernel_option(value, what="kernel option"):
    """``(name, value)`` of ``CONFIG_X=y|m|n|"string"|number``."""
    match = KCONFIG_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise Invalid('%s %r is not CONFIG_<NAME>=y|m|n|"string"|number (no spaces, quotes or backslashes inside strings)'
                      % (what, value))
    return match.group("name"), match.group("value")


def check(module, validator, value, *args, **kwargs):
    """``validator(value, ...)``, or ``module.fail_json`` with its one line."""
    try:
        return validator(value, *args, **kwargs)
    except Invalid as exc:
        module.fail_json(msg=str(exc))
    return None  # not reached
