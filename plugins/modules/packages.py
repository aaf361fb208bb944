#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: packages
short_description: Build a Flatcar board's packages (setup_board + build_packages) in the SDK container
version_added: 0.1.0
description:
  - Runs C(./build_packages --board=<board>) (which runs C(setup_board)) through C(run_sdk_container -U) in a warm,
    named SDK container that later stages re-use.
  - Records the stage in the build record; a rerun with the same inputs is skipped while the container still holds
    the same binary package index.
  - Output streams to a log on the builder; safe under C(async) with C(poll=0).
  - Packages that must be built from source (O(rebuild_atoms), and the RV(kiln.flatcar.sdk_checkout#module:rebuild_atoms)
    of the mods the checkout holds) are kept out of binary package use with C(build_packages --usepkg_exclude), because a changed
    ebuild, patch or config without a revision bump would otherwise be replaced by the cached binary package
    (flatcar/Flatcar#473). After the build, portage's C(>>> Emerging [binary] (N of M) <category>/<package>-<version>::<repo>)
    lines tell which packages were built from source and which came as binary packages; the build record keeps both and,
    for each package built from source, why (C(mod), C(excluded) or C(dependency)).
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
  - kiln.flatcar._sdk
  - kiln.flatcar._common
  - kiln.flatcar._common.board_required
  - kiln.flatcar._common.engine
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  packages:
    description: Packages to build instead of the default targets (C(@system coreos-devel/board-packages)).
    type: list
    elements: str
    default: []
  usepkg:
    description: Use binary packages (C(--[no]usepkg)).
    type: bool
    default: true
  usepkgonly:
    description: Only use binary packages (C(--[no]usepkgonly)).
    type: bool
    default: false
  getbinpkg:
    description: Download binary packages (C(--[no]getbinpkg)).
    type: bool
    default: true
  getbinpkgver:
    description: Binary package version to fetch (C(--getbinpkgver)).
    type: str
  binhost:
    description:
      - Binary package hosts of the layout C(<root>/boards/<board>/<version>/pkgs/) (what
        M(kiln.flatcar.binpkg_cache) returns), where C(<root>) is the cache root given to
        M(kiln.flatcar.sdk_checkout) as its O(kiln.flatcar.sdk_checkout#module:binhost) (C(FLATCAR_DEV_BUILDS)).
      - C(build_packages) always regenerates the board's C(make.conf) with C(setup_board --regen_configs) and no
        C(--binhost), so C(PORTAGE_BINHOST) is always C($FLATCAR_DEV_BUILDS/boards/<board>/<version>/pkgs/). kiln
        therefore passes the C(<version>) parts as C(--getbinpkgver); a host under another root cannot reach portage
        and fails the task.
      - Cannot be combined with a different O(getbinpkgver).
    type: list
    elements: str
    default: []
  skip_toolchain_update:
    description: C(--skip_toolchain_update).
    type: bool
    default: false
  skip_chroot_upgrade:
    description: C(--skip_chroot_upgrade).
    type: bool
    default: false
  only_resolve_circular_deps:
    description: C(--only_resolve_circular_deps).
    type: bool
    default: false
  fetchonly:
    description: C(--fetchonly).
    type: bool
    default: false
  rebuild:
    description: C(--rebuild).
    type: bool
    default: false
  rebuild_atoms:
    description:
      - Packages to build from source even when a binary package exists, as C(<category>/<name>) or an atom with a
        version operator (passed as C(build_packages --usepkg_exclude), part of the stage's inputs).
      - Added to the RV(kiln.flatcar.sdk_checkout#module:rebuild_atoms) of the mods of the current checkout, which are
        always excluded. A hotfix made of plain patches can compute them from the changed paths (C(docs/mods.md)).
      - Only has an effect with O(usepkg=true) (without binary packages everything is built from source).
    type: list
    elements: str
    default: []
  min_free_gb:
    description: Refuse to start with less free disk (GiB) on the checkout's filesystem.
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Build packages for amd64
  kiln.flatcar.packages:
    scripts_dir: /var/lib/kiln/scripts
    board: amd64-usr
    # sdk_checkout ran with binhost: http://cache.example.internal
    binhost:
      - http://cache.example.internal/boards/amd64-usr/4593.2.5/pkgs/
  async: 21600
  poll: 0
  register: packages_job
"""

RETURN = r"""
changed:
  description: Whether C(build_packages) ran.
  returned: always
  type: bool
reason:
  description: Why the stage ran or was skipped.
  returned: success
  type: str
stage:
  description: Stage name in the build record.
  returned: success
  type: str
record_path:
  description: Path of the build record.
  returned: always
  type: str
log_path:
  description: Log of the stage on the builder.
  returned: always
  type: str
input_digest:
  description: Digest of the stage's inputs.
  returned: success
  type: str
container_name:
  description: The warm SDK container holding the board root.
  returned: success
  type: str
details:
  description: Container ID, binary package index sha256 and package count.
  returned: success
  type: dict
outputs:
  description: Recorded outputs (none on the host for this stage; the board root lives in the container).
  returned: success
  type: list
  elements: dict
version:
  description: Version fields of the build.
  returned: success
  type: dict
usepkg_exclude:
  description: The packages kept out of binary package use (O(rebuild_atoms) and the checkout's mods).
  returned: success
  type: list
  elements: str
built_from_source:
  description: C(<category>/<package>-<version>) of every package portage built from source in this run (or the recorded run).
  returned: success
  type: list
  elements: str
binary:
  description: C(<category>/<package>-<version>) of every package portage installed from a binary package.
  returned: success
  type: list
  elements: str
rebuilt:
  description:
    - One entry per package built from source, with C(package), C(atom) and C(reason) V(mod) (a mod of the checkout
      changed it), V(excluded) (named in O(rebuild_atoms)) or V(dependency) (portage chose to build it, e.g. a reverse
      dependency or no binary package).
  returned: success
  type: list
  elements: dict
"""

import json
import os
import re

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._sdk import CHECKOUT_STATE, COMMON_ARGS, SdkStage, container_id
from ansible_collections.kiln.flatcar.plugins.module_utils._sdkargv import build_packages_argv, build_packages_flags


_BINHOST_RE = re.compile(r"^(?P<root>[^\s]+?)/boards/(?P<board>[^/\s]+)/(?P<version>[^/\s]+)/pkgs/?$")
_BINPKGVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# portage's merge message (gentoo/portage lib/_emerge/MergeListItem.py: "Emerging" + " binary" for binary packages,
# "(%s of %s) %s" with pkg.cpv + "::" + pkg.repo, " for <ROOT>" when ROOT is not /), printed after ">>> " by the
# scheduler's status display; colours are stripped first.
_EMERGE_RE = re.compile(r"^>>> Emerging (?P<binary>binary )?\([0-9]+ of [0-9]+\) (?P<cpv>[^\s:/]+/[^\s:]+)::\S+")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
REASONS = ("mod", "excluded", "dependency")


def parse_emerge(lines):
    """(built from source, binary): sorted C(cat/pkg-ver) of the ``>>> Emerging`` lines in ``lines`` (text or iterable)."""
    source, binary = set(), set()
    for line in (lines.splitlines() if isinstance(lines, str) else lines):
        match = _EMERGE_RE.match(_ANSI_RE.sub("", line).strip())
        if match:
            (binary if match.group("binary") else source).add(match.group("cpv"))
    return sorted(source), sorted(binary)


def cpv_package(cpv):
    """``cat/pn`` of ``cat/pn-version`` (PMS version rules), or ``cpv`` itself when it does not parse."""
    cat, _sep, pf = cpv.partition("/")
    try:
        return "%s/%s" % (cat, _validate.ebuild_file(pf + ".ebuild")[0])
    except _validate.Invalid:
        return cpv


def rebuild_reasons(source, mods, excluded):
    """Why each package in ``source`` was built from source: a mod changed it, it was excluded, or portage chose to."""
    mods = set(mods)
    excluded = set(_validate.atom_package(a) for a in excluded)
    out = []
    for cpv in source:
        atom = cpv_package(cpv)
        reason = "mod" if atom in mods else "excluded" if atom in excluded else "dependency"
        out.append({"package": cpv, "atom": atom, "reason": reason})
    return out


def mods_atoms(stage):
    """rebuild_atoms of the mods in the checkout state, when that state describes the checkout as it is now."""
    try:
        with open(os.path.join(stage.build_root, "kiln", CHECKOUT_STATE), "r", encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        return []
    atoms = state.get("rebuild_atoms") if isinstance(state, dict) else None
    if not atoms or state.get("commit") != stage.scripts_commit():
        return []
    if not isinstance(atoms, list):
        stage.module.fail_json(msg="rebuild_atoms in %s is not a list: rerun kiln.flatcar.sdk_checkout" % CHECKOUT_STATE)
    for atom in atoms:
        _validate.check(stage.module, _validate.package_atom, atom, "rebuild_atoms item of %s" % CHECKOUT_STATE)
    return list(atoms)


def emerged(log_path, offset):
    """parse_emerge of what the log gained since ``offset``."""
    try:
        with open(log_path, "r", encoding="utf-8", errors="replace") as fh:
            fh.seek(offset)
            return parse_emerge(fh)
    except OSError:
        return [], []


def binhost_getbinpkgver(stage, binhosts, getbinpkgver):
    """(value for --getbinpkgver, error) that makes ``binhosts`` the board's PORTAGE_BINHOST.

    build_packages reruns ``setup_board --regen_configs`` without --binhost before emerging (flatcar/scripts
    build_packages, "Before we can run any tools"), and setup_board writes PORTAGE_BINHOST from
    ``get_board_binhost <board> ${FLAGS_getbinpkgver}`` = ``$FLATCAR_DEV_BUILDS/boards/<board>/<version>/pkgs/``
    per (space separated) version (setup_board generate_binhost_list, build_library/toolchain_util.sh). A
    ``setup_board --binhost`` run beforehand is overwritten; only versions under FLATCAR_DEV_BUILDS reach portage.
    """
    if not binhosts:
        return getbinpkgver, None
    root = (stage.dev_builds or "").rstrip("/")
    versions = []
    for host in binhosts:
        match = _BINHOST_RE.match(host or "")
        if not match or match.group("board") != stage.board:
            return None, ("binhost %r is not a binary package cache URL for %s: give <cache root>/boards/%s/<version>/pkgs/ "
                          "(kiln.flatcar.binpkg_cache mode=pull returns it)" % (host, stage.board, stage.board))
        if not root or match.group("root").rstrip("/") != root:
            return None, ("binhost %r cannot reach portage: build_packages regenerates make.conf (setup_board --regen_configs, "
                          "no --binhost) with PORTAGE_BINHOST=$FLATCAR_DEV_BUILDS/boards/<board>/<version>/pkgs/, and "
                          "FLATCAR_DEV_BUILDS is %s; check out with kiln.flatcar.sdk_checkout binhost=%s"
                          % (host, root or "not set in version.txt (the SDK default server)", match.group("root").rstrip("/")))
        version = match.group("version")
        # setup_board rewrites the first 'current', 'latest' or 'sdk' inside --getbinpkgver (generate_binhost_list)
        if not _BINPKGVER_RE.match(version) or any(word in version for word in ("current", "latest", "sdk")):
            return None, ("binhost %r: version directory %r cannot be passed as --getbinpkgver (letters, digits, '.', '_', '+', '-'; "
                          "setup_board rewrites 'current', 'latest' and 'sdk' in it)" % (host, version))
        if version not in versions:
            versions.append(version)
    wanted = " ".join(versions)
    if getbinpkgver and getbinpkgver != wanted:
        return None, "getbinpkgver %r and binhost (version %r) disagree: give one of them" % (getbinpkgver, wanted)
    return wanted, None


def pkgdir(board):
    return "/build/%s/var/lib/portage/pkgs" % board


def binpkg_state(stage):
    """(container id, Packages sha256, count) of the board's binary packages, or Nones."""
    cid = container_id(stage.runner, stage.engine_argv, stage.container_name)
    if not cid:
        return None, None, 0
    script = 'cd "$1" && sha256sum Packages | cut -d" " -f1 && find . -name "*.tbz2" -o -name "*.gpkg.tar" | wc -l'
    # run_sdk_container stops a container it started when it exits; start it for the look and
    # leave it as it was found.
    _rc, running, _err = stage.runner.capture(stage.engine_argv + ["container", "inspect", "--format", "{{.State.Running}}", stage.container_name])
    started = running.strip() != "true"
    if started:
        stage.runner.capture(stage.engine_argv + ["start", stage.container_name])
    try:
        rc, out, _err = stage.runner.capture(stage.engine_argv + ["exec", stage.container_name, "/bin/sh", "-c", script, "kiln",
                                                                  pkgdir(stage.board)])
    finally:
        if started:
            stage.runner.capture(stage.engine_argv + ["stop", "-t", "0", stage.container_name])
    lines = out.split() if rc == 0 else []
    if len(lines) < 2:
        return cid, None, 0
    return cid, lines[0], int(lines[1])


def main():
    spec = dict(COMMON_ARGS)
    spec.update(
        packages=dict(type="list", elements="str", default=[]),
        usepkg=dict(type="bool", default=True),
        usepkgonly=dict(type="bool", default=False),
        getbinpkg=dict(type="bool", default=True),
        getbinpkgver=dict(type="str"),
        binhost=dict(type="list", elements="str", default=[]),
        skip_toolchain_update=dict(type="bool", default=False),
        skip_chroot_upgrade=dict(type="bool", default=False),
        only_resolve_circular_deps=dict(type="bool", default=False),
        fetchonly=dict(type="bool", default=False),
        rebuild=dict(type="bool", default=False),
        rebuild_atoms=dict(type="list", elements="str", default=[]),
        min_free_gb=dict(type="int", default=0),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    if p["usepkgonly"] and (not p["usepkg"] or not p["getbinpkg"] or p["rebuild"]):
        module.fail_json(msg="usepkgonly cannot be combined with usepkg=false, getbinpkg=false or rebuild=true (build_packages refuses it)")
    for atom in p["rebuild_atoms"]:
        _validate.check(module, _validate.package_atom, atom, "rebuild_atoms item")
    for target in p["packages"]:
        _validate.check(module, _validate.package_target, target, "packages item")
    stage = SdkStage(module, "packages")
    from_mods = mods_atoms(stage)
    exclude = sorted(set(from_mods) | set(p["rebuild_atoms"]))
    getbinpkgver, error = binhost_getbinpkgver(stage, p["binhost"], p["getbinpkgver"])
    if error:
        module.fail_json(msg=error)
    q = dict(p, getbinpkgver=getbinpkgver)  # the binhost reaches portage as --getbinpkgver (see binhost_getbinpkgver)
    flags = build_packages_flags(q, stage.board)
    build_argv = build_packages_argv(q, stage.board)
    if exclude:  # build_packages --usepkg_exclude -> emerge --usepkg-exclude (flatcar/scripts build_packages:21,149-150)
        cut = build_argv.index("--") if "--" in build_argv else len(build_argv)
        build_argv[cut:cut] = ["--usepkg_exclude=" + " ".join(exclude)]
    stage.preflight([build_argv])
    with stage:
        inputs = stage.base_inputs()
        inputs["flags"] = flags + ["binhost=" + h for h in p["binhost"]]
        if stage.dev_builds:
            inputs["FLATCAR_DEV_BUILDS"] = stage.dev_builds
        inputs["packages"] = list(p["packages"])
        inputs["container_name"] = stage.container_name
        if exclude:  # (absent without: records made before rebuild_atoms existed stay current)
            inputs["usepkg_exclude"] = exclude

        def still_there(entry):
            cid, pkgs_sha, _count = binpkg_state(stage)
            details = entry.get("details", {})
            if cid != details.get("container_id"):
                return "SDK container %s is gone or was recreated" % stage.container_name
            if pkgs_sha != details.get("packages_sha256"):
                return "binary package index in the container changed"
            return None

        def execute():
            if p["min_free_gb"]:
                stage.check_disk(stage.scripts_dir, p["min_free_gb"] * 1024 ** 3)
            if not inputs["sdk_image"]["id"]:
                stage.runner.fail("SDK image %s is not present on this host: run kiln.flatcar.sdk_image first" % inputs["sdk_image"]["ref"])
            offset = os.path.getsize(stage.log_path) if os.path.isfile(stage.log_path) else 0
            stage.runner.run(stage.sdk_command(build_argv),
                             msg="build_packages failed for %s: see the log" % stage.board)
            source, binary = emerged(stage.log_path, offset)
            cid, pkgs_sha, count = binpkg_state(stage)
            if not pkgs_sha:
                stage.runner.fail("build_packages finished but %s has no Packages index in container %s" % (pkgdir(stage.board), stage.container_name))
            return [], {"container_id": cid, "packages_sha256": pkgs_sha, "binpkg_count": count, "pkgdir": pkgdir(stage.board),
                        "engine": stage.engine, "usepkg_exclude": exclude, "built_from_source": source, "binary": binary,
                        "rebuilt": rebuild_reasons(source, from_mods, p["rebuild_atoms"])}

        result = stage.run(inputs, execute, extra_check=still_there)
        for key in ("usepkg_exclude", "built_from_source", "binary", "rebuilt"):
            result[key] = (result.get("details") or {}).get(key, exclude if key == "usepkg_exclude" else [])
        module.exit_json(**result)


if __name__ == "__main__":
    main()
