# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Mods: declared changes to a flatcar/scripts checkout, applied as one deterministic commit (docs/mods.md).

``validate_mods(mods)`` checks a list of mods from the inventory (one line per error, naming ``mods[<index>]``) and
returns them normalised, each with the sha256 of its source. ``apply_mods(checkout, mods, git)`` writes them into the
checkout and commits them once, with a fixed author and committer and the dates of the commit below, so the same mods
on the same base always give the same commit id. ``rebuild_atoms`` is the set of packages that must be built from
source because the commit touches them; ``atoms_from_paths`` gives the same set for any list of changed paths (a hotfix
of plain git patches): a changed ebuild, patch or config without a revision bump is otherwise silently replaced by the
cached binary package (flatcar/Flatcar#473).

Paths are those of the real flatcar/scripts tree (github.com/flatcar/scripts, main):

* ``sdk_container/src/third_party/coreos-overlay/<cat>/<pn>/`` and ``.../portage-stable/<cat>/<pn>/``: the two overlays;
* ``coreos-overlay/coreos-base/coreos/coreos-0.0.1.ebuild``: the meta package whose RDEPEND is the production image's
  package set (build_image:38 --base_pkg defaults to coreos-base/coreos, emerged into the image by
  build_library/prod_image_util.sh:97 emerge_to_image);
* ``coreos-overlay/coreos/user-patches/<cat>/<pn>/*.patch|*.diff``: symlinked as ``${ROOT}/etc/portage/patches``,
  applied in src_prepare (its README.md);
* ``coreos-overlay/sys-kernel/coreos-modules/files/commonconfig-<series>`` and ``<arch>_defconfig-<series>``: the kernel
  configuration coreos-modules and coreos-kernel are built with;
* ``coreos-overlay/profiles/coreos/targets/generic/package.use`` and ``package.mask`` (board targets),
  ``profiles/coreos/<arch>/generic/package.use`` (one architecture), ``profiles/coreos/base/package.accept_keywords``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate

THIRD_PARTY = "sdk_container/src/third_party"
OVERLAY = THIRD_PARTY + "/coreos-overlay"
PORTAGE_STABLE = THIRD_PARTY + "/portage-stable"
OVERLAYS = {"coreos-overlay": OVERLAY, "portage-stable": PORTAGE_STABLE}
USER_PATCHES = OVERLAY + "/coreos/user-patches"
IMAGE_PACKAGE = "coreos-base/coreos"
KERNEL_FILES = OVERLAY + "/sys-kernel/coreos-modules/files"
KERNEL_ATOMS = ("sys-kernel/coreos-modules", "sys-kernel/coreos-kernel")
PROFILES = OVERLAY + "/profiles/coreos"
PROFILE_FILES = {
    "use": PROFILES + "/targets/generic/package.use",
    "accept_keywords": PROFILES + "/base/package.accept_keywords",
    "mask": PROFILES + "/targets/generic/package.mask",
}
ARCH_PROFILE_USE = PROFILES + "/%s/generic/package.use"
ARCHES = ("amd64", "arm64")
# directories of an overlay that are not categories
NOT_CATEGORIES = ("profiles", "eclass", "metadata", "licenses", "scripts", "coreos", "changelog")
KINDS = {
    "ebuild": {"src", "category", "image", "sysext", "overlay"},
    "patch": {"src", "package"},
    "kernel_config": {"options", "arch"},
    "use": {"entries", "arch"},
    "accept_keywords": {"entries"},
    "mask": {"entries"},
}
AUTHOR = {"GIT_AUTHOR_NAME": "kiln", "GIT_AUTHOR_EMAIL": "kiln@localhost",
          "GIT_COMMITTER_NAME": "kiln", "GIT_COMMITTER_EMAIL": "kiln@localhost"}
MAX_FILES = 1000
MAX_BYTES = 64 * 1024 * 1024
RDEPEND_MARK = "# kiln mods: packages added to the image"


class ModsError(ValueError):
    """A mod that cannot be used or applied; the message is one line."""


# -- validation --------------------------------------------------------------------------------------------------
def validate_mods(mods):
    """The mods normalised (see ``_check_<kind>``), each with ``sha256`` of its source; ModsError with one line."""
    if not isinstance(mods, list):
        raise ModsError("mods must be a list of mods (dicts with a kind: %s)" % ", ".join(sorted(KINDS)))
    out = []
    for index, mod in enumerate(mods):
        where = "mods[%d]" % index
        if not isinstance(mod, dict) or mod.get("kind") not in KINDS:
            kind = mod.get("kind") if isinstance(mod, dict) else None
            raise ModsError("%s: kind %r is not one of %s" % (where, kind, ", ".join(sorted(KINDS))))
        kind = mod["kind"]
        where += " (%s)" % kind
        extra = sorted(set(mod) - KINDS[kind] - {"kind"})
        if extra:
            takes = ", ".join(sorted(KINDS[kind]))
            raise ModsError("%s: unknown key %s: a %s mod takes %s" % (where, ", ".join(map(repr, extra)), kind, takes))
        try:
            norm = CHECKS[kind](mod)
        except _validate.Invalid as exc:
            raise ModsError("%s: %s" % (where, exc))
        except ModsError as exc:
            raise ModsError("%s: %s" % (where, exc))
        norm["kind"] = kind
        norm["sha256"] = _digest(norm)
        out.append(norm)
    return out


def _digest(norm):
    spec = dict((k, v) for k, v in norm.items() if k not in ("src", "sha256"))
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _source_path(value, what):
    if not isinstance(value, str) or not value or _validate._one_line(value) != value or any(ord(c) < 32 for c in value):
        raise ModsError("%s %r is not a path (empty, or with control characters)" % (what, value))
    if not os.path.isabs(value):
        raise ModsError("%s %r is not an absolute path on the builder" % (what, value))
    return os.path.normpath(value)


def _read_file(path, what):
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ModsError("%s %s is not a regular file (a symlink, directory or device)" % (what, path))
        if st.st_size > MAX_BYTES:
            raise ModsError("%s %s is larger than %d MiB" % (what, path, MAX_BYTES // 1048576))
        with open(path, "rb") as fh:
            return fh.read(), bool(st.st_mode & 0o111)
    except OSError as exc:
        raise ModsError("cannot read %s %s: %s" % (what, path, exc.strerror or exc))


def _tree(src):
    """``[(relative path, sha256, executable)]`` of the regular files below ``src``; symlinks that stay inside are
    followed, symlinks pointing out, devices and unusual names are refused."""
    real_src = os.path.realpath(src)
    files = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, src)
            if any(ord(c) < 32 or c in "\\" for c in rel) or name.startswith("."):
                raise ModsError("file %r in %s: hidden or control-character names are not copied" % (rel, src))
            if os.path.islink(full):
                target = os.path.realpath(full)
                if not (target == real_src or target.startswith(real_src + os.sep)) or os.path.isdir(target):
                    raise ModsError("%s is a symlink pointing out of %s (or to a directory): copy the file instead" % (rel, src))
            if name in filenames or os.path.islink(full):
                data, exe = _read_file(os.path.realpath(full), "file")
                files.append((rel, hashlib.sha256(data).hexdigest(), exe))
        if len(files) > MAX_FILES:
            raise ModsError("%s holds more than %d files" % (src, MAX_FILES))
    return sorted(files)


def _check_ebuild(mod):
    """``src``: a directory holding ``<pn>-<version>[-rN].ebuild`` (+ Manifest, files/); ``category``; ``image`` (add
    to the image's package set) or ``sysext`` (name of the sysext that gets it); ``overlay``."""
    src = _source_path(mod.get("src"), "src")
    if os.path.islink(src) or not os.path.isdir(src):
        raise ModsError("src %s is not a directory (give the directory holding <name>-<version>.ebuild)" % src)
    category = mod.get("category")
    if not isinstance(category, str) or not _validate.CATEGORY_RE.match(category) or category in NOT_CATEGORIES:
        raise ModsError("category %r is not a package category such as app-misc" % (category,))
    files = _tree(src)
    ebuilds = [rel for rel, _sha, _exe in files if "/" not in rel and rel.endswith(".ebuild")]
    if not ebuilds:
        raise ModsError("src %s holds no <name>-<version>.ebuild file" % src)
    parsed = [_validate.ebuild_file(name) for name in ebuilds]
    names = sorted(set(pn for pn, _v in parsed))
    if len(names) != 1:
        raise ModsError("src %s holds ebuilds of several packages (%s): one directory per package" % (src, ", ".join(names)))
    package = _validate.package_name("%s/%s" % (category, names[0]))
    image, sysext, overlay = mod.get("image", False), mod.get("sysext"), mod.get("overlay")
    if not isinstance(image, bool):
        raise ModsError("image %r is not true or false" % (image,))
    if sysext is not None:
        _validate.identifier(sysext, "sysext")
        if image:
            raise ModsError("image and sysext both set: a package goes into the image or into a sysext")
    if overlay is not None and overlay not in OVERLAYS:
        raise ModsError("overlay %r is not one of %s" % (overlay, ", ".join(sorted(OVERLAYS))))
    return {"src": src, "package": package, "versions": sorted(v for _pn, v in parsed), "image": image, "sysext": sysext,
            "overlay": overlay, "files": [[rel, sha, exe] for rel, sha, exe in files]}


def _check_patch(mod):
    """``src``: a patch file (``.patch`` or ``.diff``, the only names portage's user patches pick up); ``package``."""
    src = _source_path(mod.get("src"), "src")
    name = _validate.file_name(os.path.basename(src), "patch file name")
    if not name.endswith((".patch", ".diff")) or name.startswith("."):
        raise ModsError("patch %s must end in .patch or .diff (portage's user patches apply nothing else)" % src)
    data, _exe = _read_file(src, "patch")
    package = _validate.package_name(mod.get("package"))
    return {"src": src, "package": package, "name": name, "files": [[name, hashlib.sha256(data).hexdigest(), False]]}


def _arch(mod):
    arch = mod.get("arch")
    if arch is not None and arch not in ARCHES:
        raise ModsError("arch %r is not one of %s" % (arch, ", ".join(ARCHES)))
    return arch


def _lines(mod, key):
    value = mod.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ModsError("%s must be a non-empty list of strings" % key)
    return value


def _check_kernel_config(mod):
    """``options``: ``CONFIG_X=y|m|n|"string"|number``; ``arch`` picks ``<arch>_defconfig-*`` over commonconfig."""
    options = {}
    for line in _lines(mod, "options"):
        name, value = _validate.kernel_option(line)
        if options.get(name, value) != value:
            raise ModsError("%s is given twice with different values" % name)
        options[name] = value
    return {"options": ["%s=%s" % kv for kv in sorted(options.items())], "arch": _arch(mod)}


def _check_profile(mod, kind):
    entries = []
    for line in _lines(mod, "entries"):
        words = line.split()
        if not words or " ".join(words) != line:
            raise ModsError("entry %r: one atom and its words, separated by single spaces" % line)
        _validate.package_atom(words[0])
        if kind == "use" and len(words) < 2:
            raise ModsError("entry %r names no USE flag: give '<atom> flag -flag'" % line)
        if kind == "mask" and len(words) > 1:
            raise ModsError("entry %r: a package.mask entry is one atom" % line)
        for word in words[1:]:
            (_validate.use_flag if kind == "use" else _validate.keyword)(word)
        entries.append(line)
    return {"entries": entries, "arch": _arch(mod) if kind == "use" else None}


CHECKS = {
    "ebuild": _check_ebuild,
    "patch": _check_patch,
    "kernel_config": _check_kernel_config,
    "use": lambda mod: _check_profile(mod, "use"),
    "accept_keywords": lambda mod: _check_profile(mod, "accept_keywords"),
    "mask": lambda mod: _check_profile(mod, "mask"),
}


# -- what must be rebuilt ----------------------------------------------------------------------------------------
def atoms_from_paths(paths):
    """Sorted ``<category>/<name>`` of the packages whose ebuild directory, user patches or kernel configuration a
    list of changed paths (``git diff --name-only A B``) touches. Profiles and eclasses name no package by path:
    their packages come from the entries (``planned_atoms``)."""
    atoms = set()
    for path in paths:
        parts = path.strip().strip("/").split("/")
        for prefix in (USER_PATCHES, OVERLAY, PORTAGE_STABLE):
            base = prefix.split("/")
            if parts[:len(base)] != base or len(parts) < len(base) + 3:
                continue
            cat, pn = parts[len(base)], parts[len(base) + 1]
            if prefix != USER_PATCHES and cat in NOT_CATEGORIES:
                continue
            try:
                atoms.add(_validate.package_name("%s/%s" % (cat, pn)))
            except _validate.Invalid:
                continue
            if "%s/%s" % (cat, pn) == KERNEL_ATOMS[0]:
                atoms.update(KERNEL_ATOMS)
            break
    return sorted(atoms)


def atoms_from_profile_diff(diff):
    """Packages named on the lines a ``git diff`` (``-U0``, of the profile files) adds or removes: package.use,
    package.accept_keywords and package.mask lines name their package first; other lines are ignored."""
    atoms = set()
    for line in diff.splitlines():
        if line[:1] not in "+-" or line.startswith(("+++", "---")):
            continue
        words = line[1:].split()
        try:
            atoms.add(_validate.atom_package(words[0]) if words and not words[0].startswith("#") else None)
        except _validate.Invalid:
            continue
    atoms.discard(None)
    return sorted(atoms)


def rebuild_since(since, git):
    """Packages changed between commit ``since`` (a release) and HEAD: ``atoms_from_paths`` of the changed paths plus
    the packages of changed profile lines. For a hotfix of plain git patches, or mods on top of a released commit."""
    names = [p for p in git(["diff", "--name-only", "--no-renames", "-z", since, "HEAD", "--"]).split("\0") if p]
    profile_diff = git(["diff", "-U0", "--no-renames", since, "HEAD", "--", PROFILES]) if any(
        n.startswith(PROFILES + "/") for n in names) else ""
    return sorted(set(atoms_from_paths(names)) | set(atoms_from_profile_diff(profile_diff)))


def planned_atoms(mods):
    """The packages validated mods touch (known before anything is applied, so check mode can report them)."""
    atoms = set()
    for mod in mods:
        if mod["kind"] in ("ebuild", "patch"):
            atoms.add(mod["package"])
            if mod.get("image"):
                atoms.add(IMAGE_PACKAGE)
        elif mod["kind"] == "kernel_config":
            atoms.update(KERNEL_ATOMS)
        else:
            atoms.update(_validate.atom_package(line.split()[0]) for line in mod["entries"])
    return sorted(atoms)


def sysext_packages(mods):
    out = {}
    for mod in mods:
        if mod["kind"] == "ebuild" and mod.get("sysext"):
            out.setdefault(mod["sysext"], []).append(mod["package"])
    return dict((k, sorted(set(v))) for k, v in sorted(out.items()))


def summary(mods):
    """What a result and the checkout state keep of the mods (no file lists)."""
    keep = ("kind", "src", "package", "versions", "image", "sysext", "overlay", "options", "entries", "arch", "sha256")
    return [dict((k, m[k]) for k in keep if m.get(k) not in (None, [])) for m in mods]


# -- applying ----------------------------------------------------------------------------------------------------
def add_rdepend(text, package):
    """``text`` of the image meta ebuild with ``package`` in its RDEPEND (once; idempotent)."""
    if re.search(r"^\s+%s\s*$" % re.escape(package), text, re.M):
        return text
    if RDEPEND_MARK not in text:
        text = text.rstrip("\n") + "\n\n" + RDEPEND_MARK + '\nRDEPEND+="\n"\n'
    end = text.index('\n"', text.index('RDEPEND+="', text.index(RDEPEND_MARK)))
    return text[:end] + "\n\t" + package + text[end:]


def merge_kernel_config(text, options):
    """``text`` with each ``CONFIG_X=v`` set (``=n`` as ``# CONFIG_X is not set``), replacing an existing line."""
    lines = text.splitlines()
    for option in options:
        name, value = _validate.kernel_option(option)
        new = "# %s is not set" % name if value == "n" else "%s=%s" % (name, value)
        pattern = re.compile(r"^(?:%s=.*|# %s is not set)\s*$" % (name, name))
        hits = [i for i, line in enumerate(lines) if pattern.match(line)]
        if hits:
            lines[hits[0]] = new
            lines = [line for i, line in enumerate(lines) if i not in hits[1:]]
        else:
            lines.append(new)
    return "\n".join(lines) + "\n"


def _series(name):
    return tuple(int(x) for x in re.findall(r"[0-9]+", name.rsplit("-", 1)[-1]))


def kernel_config_file(checkout, arch=None):
    """The repository path of the kernel config a kernel_config mod changes: the newest series of ``commonconfig-*``
    (or ``<arch>_defconfig-*``) in coreos-modules/files."""
    prefix = "%s_defconfig-" % arch if arch else "commonconfig-"
    try:
        names = [n for n in os.listdir(os.path.join(checkout, KERNEL_FILES)) if n.startswith(prefix) and _series(n)]
    except OSError:
        names = []
    if not names:
        raise ModsError("no %s* in %s: is this a flatcar/scripts checkout?" % (prefix, KERNEL_FILES))
    return KERNEL_FILES + "/" + max(names, key=_series)


def _write(checkout, rel, data, exe=False):
    path = os.path.join(checkout, rel)
    parent = os.path.dirname(path)
    if os.path.realpath(parent) != os.path.join(os.path.realpath(checkout), os.path.dirname(rel)):
        raise ModsError("%s leaves the checkout through a symlink" % rel)
    os.makedirs(parent, exist_ok=True)
    if os.path.islink(path) or os.path.isdir(path):
        raise ModsError("%s is a symlink or directory in the checkout" % rel)
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o755 if exe else 0o644)


def _read(checkout, rel, missing=None):
    try:
        with open(os.path.join(checkout, rel), "r", encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        if missing is None:
            raise ModsError("%s is missing in the checkout: is this a flatcar/scripts checkout?" % rel)
        return missing


def _apply_one(checkout, mod):
    """Write one mod into the checkout; the repository paths it wrote."""
    kind = mod["kind"]
    if kind == "ebuild":
        overlay = mod["overlay"] or next((k for k in ("coreos-overlay", "portage-stable")
                                          if os.path.isdir(os.path.join(checkout, OVERLAYS[k], mod["package"]))), "coreos-overlay")
        dest = "%s/%s" % (OVERLAYS[overlay], mod["package"])
        for rel, _sha, exe in mod["files"]:
            data, _x = _read_file(os.path.realpath(os.path.join(mod["src"], rel)), "file")
            _write(checkout, dest + "/" + rel, data, exe)
        paths = [dest]
        if mod["image"]:
            meta = "%s/%s/coreos-0.0.1.ebuild" % (OVERLAY, IMAGE_PACKAGE)
            _write(checkout, meta, add_rdepend(_read(checkout, meta), mod["package"]).encode())
            paths.append(meta)
        return paths
    if kind == "patch":
        rel = "%s/%s/%s" % (USER_PATCHES, mod["package"], mod["name"])
        _write(checkout, rel, _read_file(mod["src"], "patch")[0])
        return [rel]
    if kind == "kernel_config":
        rel = kernel_config_file(checkout, mod["arch"])
        _write(checkout, rel, merge_kernel_config(_read(checkout, rel), mod["options"]).encode())
        return [rel]
    rel = ARCH_PROFILE_USE % mod["arch"] if mod.get("arch") else PROFILE_FILES[kind]
    text = _read(checkout, rel, missing="")
    have = set(text.splitlines())
    new = [line for line in mod["entries"] if line not in have]
    if new:
        text = (text if not text or text.endswith("\n") else text + "\n") + "\n".join(new) + "\n"
        _write(checkout, rel, text.encode())
    return [rel]


def commit_message(mods):
    lines = ["kiln mods", ""]
    for mod in mods:
        what = mod.get("package") or ", ".join(mod.get("options") or mod.get("entries") or [])
        lines.append("- %s %s (sha256 %s)" % (mod["kind"], what[:200], mod["sha256"][:16]))
    return "\n".join(lines) + "\n"


def apply_mods(checkout, mods, git):
    """Apply validated ``mods`` to the checkout at HEAD and commit them once, deterministically.

    ``git(args, env=None)`` runs git in the checkout (through ``_runner``) and returns its stdout, raising ModsError.
    Returns ``{"commit", "changed_paths", "rebuild_atoms", "sysext_packages"}``; without a change no commit is made."""
    if not mods:
        return {"commit": git(["rev-parse", "HEAD"]).strip(), "changed_paths": [], "rebuild_atoms": [], "sysext_packages": {}}
    paths = []
    for mod in mods:
        paths += [p for p in _apply_one(checkout, mod) if p not in paths]
    git(["add", "--all", "--"] + paths)
    changed = [p for p in git(["diff", "--cached", "--name-only", "--no-renames", "-z"]).split("\0") if p]
    if changed:
        date = git(["show", "-s", "--format=%cd", "--date=raw", "HEAD"]).strip()
        env = dict(AUTHOR, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        git(["-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null", "commit", "--quiet", "--no-verify",
             "--cleanup=verbatim", "-m", commit_message(mods)], env=env)
    atoms = sorted(set(atoms_from_paths(changed)) | set(planned_atoms(mods)))
    return {"commit": git(["rev-parse", "HEAD"]).strip(), "changed_paths": sorted(changed), "rebuild_atoms": atoms,
            "sysext_packages": sysext_packages(mods)}
