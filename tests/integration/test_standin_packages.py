"""The stand-in SDK's packages behave like portage (kiln issue 12: "rebuild only what changed" is observable).

Against the real stand-in in the SDK container (like test_standin_sdk.py), one board shared by the cases in
file order: the overlays at the real place (sdk_container/src/third_party/{coreos-overlay,portage-stable}),
build_packages printing portage's merge lines, binpkgs reused by CPV+USE (the flatcar/Flatcar#473 trap),
--usepkg_exclude, slot-operator rebuilds, package.mask, and build_image's package list, /usr content and
kernel config.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from standin_sdk import fixture as sdk

SDK_VERSION = "4593.2.5"
TAG = "stable-4593.2.5"
BOARD = "amd64-usr"
ROOT = f"/build/{BOARD}/"
# file:// binhost inside the checkout (the container sees the checkout at /mnt/host/source/src/scripts)
BINHOST_SDK = "/mnt/host/source/src/scripts/__build__/binhost"
EMERGE_RE = re.compile(r"^>>> Emerging (binary )?\((\d+) of (\d+)\) (\S+)::(coreos-overlay|portage-stable) for "
                       + re.escape(ROOT) + "$", re.M)
IMAGE_CLOSURE = [
    "coreos-base/coreos-0.0.1::coreos-overlay",
    "coreos-base/coreos-au-key-0-r2::coreos-overlay",
    "coreos-base/update_engine-0.4.10-r20::coreos-overlay",
    "dev-libs/openssl-3.3.3::portage-stable",
    "sys-apps/baselayout-3.6.8-r3::coreos-overlay",
    "sys-apps/ignition-2.21.0::coreos-overlay",
    "sys-apps/systemd-256.9-r2::coreos-overlay",
    "sys-kernel/coreos-kernel-6.12.41::coreos-overlay",
    "sys-kernel/coreos-modules-6.12.41::coreos-overlay",
    "sys-libs/glibc-2.41-r5::portage-stable",
]
PATCH = """--- a/update_engine.conf
+++ b/update_engine.conf
@@ -1,2 +1,3 @@
 # stand-in update_engine configuration
 SERVER=https://public.update.flatcar-linux.net/v1/update/
+KILN_PATCHED=1
"""


class Board:
    def __init__(self, checkout: Path, name: str):
        self.co = checkout
        self.name = name
        self.coreos = sdk.overlay_dir(checkout, "coreos-overlay")
        self.stable = sdk.overlay_dir(checkout, "portage-stable")

    def run(self, *args, env=None, check=True):
        e = dict(os.environ)
        for k in ("FLATCAR_BUILD_ID", "COREOS_OFFICIAL", "STANDIN_FAIL_STEP", "STANDIN_STEP_SLEEP",
                  "STANDIN_SDK_NO_CONTAINER", "STANDIN_PKG_BUILD_SECONDS"):
            e.pop(k, None)
        e.update(env or {})
        r = subprocess.run([str(self.co / "run_sdk_container"), "-n", self.name, "-C", sdk.sdk_image_name("all", SDK_VERSION), "-U", *args],
                           cwd=self.co, env=e,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False)
        r.output = r.stdout + r.stderr
        if check and r.returncode != 0:
            raise AssertionError(f"rc={r.returncode}\n{r.output[-4000:]}")
        return r

    def build_packages(self, *flags, **kw):
        return self.run("./build_packages", f"--board={BOARD}", *flags, **kw)

    def sh(self, script):
        return self.run("sh", "-c", script).stdout

    def fresh_board_from_binhost(self):
        """Publish the board's binpkgs to the file:// binhost, then start over with an empty board root."""
        self.sh(f"mkdir -p {BINHOST_SDK}/boards/{BOARD}/{SDK_VERSION}/pkgs && "
                f"cp -a /build/{BOARD}/var/lib/portage/pkgs/. {BINHOST_SDK}/boards/{BOARD}/{SDK_VERSION}/pkgs/")
        self.run("./setup_board", f"--board={BOARD}", "--force")


def emerged(output, block=0):
    """[(kind, cpv)] of the >>> Emerging lines of one emerge run, checking the (N of M) counter. build_packages runs
    emerge for the board packages (block 0), then twice per OEM sysext package (--onlydeps, --buildpkgonly)."""
    blocks = output.split("Calculating dependencies... done!")[1:]
    if not blocks:
        return []
    rows = EMERGE_RE.findall(blocks[block])
    for i, (_b, n, m, _cpv, _repo) in enumerate(rows, 1):
        assert (int(n), int(m)) == (i, len(rows)), output
    return [("binary" if b else "source", cpv) for b, _n, _m, cpv, _repo in rows]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    if not sdk.dockerd_start():
        pytest.skip("dockerd cannot run on this machine")
    try:
        sdk.ensure_sdk_image("all", SDK_VERSION)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot build stand-in SDK image: {exc.stderr[-500:]}")
    tmp = tmp_path_factory.mktemp("standin-packages")
    origin = sdk.make_scripts_origin(tmp / "origin", tags=[TAG])
    co = tmp / "scripts"
    subprocess.run(["git", "clone", "-q", origin, str(co)], check=True)
    sdk.instantiate(co)
    # the binary package cache as FLATCAR_DEV_BUILDS (get_board_binhost: <dev builds>/boards/<board>/<ver>/pkgs/)
    vf = co / "sdk_container/.repo/manifests/version.txt"
    vf.write_text(vf.read_text() + f"FLATCAR_DEV_BUILDS=file://{BINHOST_SDK}\n")
    name = f"kiln-standin-pkgs-{uuid.uuid4().hex[:8]}"
    b = Board(co, name)
    b.cold = b.build_packages()
    yield b
    sdk.remove_containers(name)


def test_cold_build_builds_everything_from_source(board):
    rows = emerged(board.cold.output)
    assert len(rows) == 13 and {row[0] for row in rows} == {"source"}, board.cold.output
    cpvs = [c for _k, c in rows]
    # dependencies first; the default targets @system + coreos-devel/board-packages
    assert cpvs.index("dev-libs/openssl-3.3.3") < cpvs.index("sys-apps/systemd-256.9-r2")
    assert cpvs[-1] == "coreos-devel/board-packages-0.0.1"
    assert "app-containers/containerd-1.7.27" in cpvs  # 1.7.28 is ~amd64 only
    assert "Total: 13 packages (13 new), Size of downloads: 0 KiB" in board.cold.output
    assert ">>> Installing (1 of 13) sys-apps/baselayout-3.6.8-r3::coreos-overlay to /build/amd64-usr/" in board.cold.output
    assert ">>> Completed (13 of 13) coreos-devel/board-packages-0.0.1::coreos-overlay to /build/amd64-usr/" in board.cold.output
    idx = board.sh(f"cat /build/{BOARD}/var/lib/portage/pkgs/Packages")
    assert "PACKAGES: 18" in idx and "CPV: app-containers/docker-28.0.4" in idx
    # then the OEM sysexts' metapackages as binary packages only (vendor build_packages:301-350), not installed
    oems = [emerged(board.cold.output, i) for i in range(1, 11)]
    assert oems == [x for o in ("ami-0.2.0", "azure-2.12.0.4-r2", "openstack-0.0.2", "qemu-0.0.2", "vmware-12.5.0")
                    for x in ([], [("source", "coreos-base/oem-" + o)])], board.cold.output
    assert "CPV: coreos-base/oem-qemu-0.0.2" in idx
    installed = board.sh(f"ls -d /build/{BOARD}/var/db/pkg/coreos-base/* | sed 's|^|VDB:|'")
    assert "VDB:/build/amd64-usr/var/db/pkg/coreos-base/coreos-0.0.1" in installed and "/oem-" not in installed
    assert "RDEPEND: sys-libs/glibc dev-libs/openssl:0/3=" in idx and "SLOT: 0/3" in idx


def test_rerun_skips_everything(board):
    r = board.build_packages()
    assert emerged(r.output) == []
    assert "Total: 0 packages, Size of downloads: 0 KiB" in r.output


def test_ebuild_change_without_revbump_reuses_binpkg(board):
    """flatcar/Flatcar#473: a changed file or a new user patch without a revbump does not rebuild anything."""
    src = board.coreos / "coreos-base/update_engine/files/src/update_engine.conf"
    src.write_text(src.read_text())  # unchanged base: the patch below applies
    pdir = board.coreos / "coreos/user-patches/coreos-base/update_engine"
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / "0001-kiln.patch").write_text(PATCH)
    ebuild = board.coreos / "coreos-base/update_engine/update_engine-0.4.10-r20.ebuild"
    ebuild.write_text(ebuild.read_text() + "# changed without a revbump\n")

    # installed with the same CPV and USE: --update skips it, even with --usepkg_exclude
    assert emerged(board.build_packages().output) == []
    assert emerged(board.build_packages("--usepkg_exclude=coreos-base/update_engine").output) == []

    # a fresh board with the binhost: every package, the changed one too, comes from its old binpkg
    board.fresh_board_from_binhost()
    r = board.build_packages()
    rows = emerged(r.output)
    assert len(rows) == 13 and {row[0] for row in rows} == {"binary"}, r.output
    assert ("binary", "coreos-base/update_engine-0.4.10-r20") in rows
    assert "KILN_PATCHED" not in board.sh(f"cat /build/{BOARD}/usr/share/update_engine/update_engine.conf")


class _Binhost(http.server.SimpleHTTPRequestHandler):
    requested: list = []

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        self.requested.append((self.command, self.path, args[1] if len(args) > 1 else ""))


def _set_dev_builds(board, url):
    vf = board.co / "sdk_container/.repo/manifests/version.txt"
    lines = [x for x in vf.read_text().splitlines() if not x.startswith("FLATCAR_DEV_BUILDS=")]
    vf.write_text("\n".join(lines + ["FLATCAR_DEV_BUILDS=" + url]) + "\n")


def test_http_binhost_is_fetched_from_the_builder_network(board):
    """--getbinpkg from an http:// binhost (what the fleet's cache is): the real SDK container reaches it with
    --network host, the stand-in's through run_sdk_container's relay (build_library/standin_netfwd.py; from the
    root network namespace only 127.0.0.0/8). Same decisions as file://: every package of the binhost as a binary."""
    served = board.co / "__build__" / "binhost"
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Binhost, directory=str(served)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d" % srv.server_address[1]
    _Binhost.requested.clear()
    try:
        _set_dev_builds(board, url)
        board.run("./setup_board", f"--board={BOARD}", "--force")
        r = board.build_packages()
        rows = emerged(r.output)
        assert len(rows) == 13 and {row[0] for row in rows} == {"binary"}, r.output
        got = {path for cmd, path, code in _Binhost.requested if cmd == "GET" and code == "200"}
        pkgs = f"/boards/{BOARD}/{SDK_VERSION}/pkgs/"
        assert pkgs + "Packages" in got, _Binhost.requested
        assert pkgs + "coreos-base/update_engine-0.4.10-r20.gpkg.tar" in got, _Binhost.requested
        # the 13 board packages and the 5 OEM sysext metapackages (--buildpkgonly finds them on the binhost)
        assert len([p for p in got if p.endswith(".gpkg.tar")]) == 18, _Binhost.requested

        # an index that cannot be fetched: portage's error line (bintree._populate_remote), then source builds
        _set_dev_builds(board, url + "/gone")
        board.run("./setup_board", f"--board={BOARD}", "--force")
        r = board.build_packages()
        assert f"!!! Error fetching binhost package info from '{url}/gone{pkgs.rstrip('/')}'" in r.output, r.output
        rows = emerged(r.output)
        assert len(rows) == 13 and {row[0] for row in rows} == {"source"}, r.output
    finally:
        srv.shutdown()
        _set_dev_builds(board, f"file://{BINHOST_SDK}")


def test_usepkg_exclude_builds_from_source_and_patch_reaches_image(board):
    board.run("./setup_board", f"--board={BOARD}", "--force")
    r = board.build_packages("--usepkg_exclude=coreos-base/update_engine")
    rows = emerged(r.output)
    assert [c for k, c in rows if k == "source"] == ["coreos-base/update_engine-0.4.10-r20"], r.output
    assert len(rows) == 13
    assert " * Applying 0001-kiln.patch ..." in r.output

    img = board.run("./build_image", f"--board={BOARD}", "prod", "--replace")
    assert "Done. Image(s) created in" in img.output
    d = board.co / "__build__/images/images" / BOARD / "latest"
    assert (d / "flatcar_production_image_packages.txt").read_text().splitlines() == IMAGE_CLOSURE
    contents = (d / "flatcar_production_image_contents.txt").read_text()
    assert "./usr/share/update_engine/update_engine.conf" in contents
    assert "./usr/lib/modules/6.12.41-flatcar/build/.config" in contents
    assert "./usr/share/docker" not in contents  # board-packages only: not in the coreos-base/coreos closure
    sq = d / "flatcar_production_image_sysext.squashfs"
    conf = subprocess.run(["unsquashfs", "-cat", str(sq), "usr/share/update_engine/update_engine.conf"],
                          capture_output=True, text=True, check=True).stdout
    assert "KILN_PATCHED=1" in conf
    kconf = subprocess.run(["unsquashfs", "-cat", str(sq), "usr/lib/modules/6.12.41-flatcar/build/.config"],
                           capture_output=True, text=True, check=True).stdout
    # commonconfig-6.12 + amd64_defconfig-6.12 (coreos-kernel.eclass find_archconfig)
    assert "CONFIG_OVERLAY_FS=m" in kconf and "CONFIG_X86_64=y" in kconf and "CONFIG_ARM64" not in kconf


def test_subslot_bump_rebuilds_slot_operator_dependants_only(board):
    old = (board.stable / "dev-libs/openssl/openssl-3.3.3.ebuild").read_text()
    (board.stable / "dev-libs/openssl/openssl-3.4.0.ebuild").write_text(old.replace('SLOT="0/3"', 'SLOT="0/3.4"'))
    t0 = time.monotonic()
    r = board.build_packages(env={"STANDIN_PKG_BUILD_SECONDS": "0.5"})
    took = time.monotonic() - t0
    # systemd and update_engine depend on dev-libs/openssl:=, ignition on plain dev-libs/openssl
    assert emerged(r.output) == [("source", "dev-libs/openssl-3.4.0"), ("source", "sys-apps/systemd-256.9-r2"),
                                 ("source", "coreos-base/update_engine-0.4.10-r20")], r.output
    assert "Total: 3 packages (1 upgrade, 2 reinstalls), Size of downloads: 0 KiB" in r.output
    assert took >= 1.5
    vdb = board.sh(f"cat /build/{BOARD}/var/db/pkg/sys-apps/systemd-256.9-r2/RDEPEND")
    assert "dev-libs/openssl:0/3.4=" in vdb
    assert emerged(board.build_packages().output) == []


def test_accept_keywords_selects_the_testing_version(board):
    kw = board.coreos / "profiles/coreos/base/package.accept_keywords"
    kw.write_text(kw.read_text() + "=app-containers/containerd-1.7.28\n")
    r = board.build_packages()
    assert emerged(r.output) == [("source", "app-containers/containerd-1.7.28")], r.output


def test_package_mask_fails_with_one_portage_error(board):
    mask = board.coreos / "profiles/coreos/base/package.mask"
    before = mask.read_text()
    mask.write_text(before + "sys-apps/ignition\n")
    board.run("./setup_board", f"--board={BOARD}", "--force")  # a board where ignition is not installed yet
    try:
        r = board.build_packages(check=False)
    finally:
        mask.write_text(before)
    assert r.returncode == 1
    assert r.output.count("have been masked.") == 1
    assert '!!! All ebuilds that could satisfy "sys-apps/ignition" have been masked.' in r.output
    assert "- sys-apps/ignition-2.21.0::coreos-overlay (masked by: package.mask)" in r.output
    assert emerged(r.output) == []


def test_files_mod_is_built_from_source_and_lands_in_the_image(board, tmp_path):
    """A `files` mod (plugins/module_utils/_mods.py) applied like sdk_checkout does: the generated kiln-files package
    goes through the stand-in emerge (kept out of binary packages like every mod's package) into the image's /usr."""
    from ansible_collections.kiln.flatcar.plugins.module_utils import _mods

    src = tmp_path / "motd"
    (src / "bin").mkdir(parents=True)
    (src / "motd.txt").write_text("KILN_FILES_MOD=1\n")
    (src / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    (src / "bin" / "hello").chmod(0o755)

    def git(args, env=None):
        e = dict(os.environ, **(env or {}))
        return subprocess.run(["git", "-C", str(board.co)] + list(args), capture_output=True, text=True, check=True, env=e).stdout

    mods = _mods.validate_mods([{"kind": "files", "src": str(src), "dest": "/usr/share/kiln-motd", "name": "motd", "image": True}])
    applied = _mods.apply_mods(str(board.co), mods, git)
    assert "kiln-files/motd" in applied["rebuild_atoms"] and "coreos-base/coreos" in applied["rebuild_atoms"]
    r = board.build_packages("--usepkg_exclude=" + " ".join(applied["rebuild_atoms"]))
    rows = emerged(r.output)
    assert ("source", "kiln-files/motd-1") in rows and ("source", "coreos-base/coreos-0.0.1") in rows, r.output
    img = board.run("./build_image", f"--board={BOARD}", "prod", "--replace")
    assert "Done. Image(s) created in" in img.output
    d = board.co / "__build__/images/images" / BOARD / "latest"
    assert "kiln-files/motd-1::coreos-overlay" in (d / "flatcar_production_image_packages.txt").read_text().splitlines()
    sq = d / "flatcar_production_image_sysext.squashfs"
    motd = subprocess.run(["unsquashfs", "-cat", str(sq), "usr/share/kiln-motd/motd.txt"], capture_output=True, text=True, check=True)
    assert motd.stdout == "KILN_FILES_MOD=1\n"
    listing = subprocess.run(["unsquashfs", "-lls", str(sq), "usr/share/kiln-motd/bin/hello"], capture_output=True, text=True, check=True)
    assert "-rwxr-xr-x" in listing.stdout, listing.stdout


def test_files_mods_into_an_oem_sysext_and_a_sysext(board, tmp_path):
    """`oem: azure` puts a files mod's package into coreos-base/oem-azure's RDEPEND: with the metapackage kept out of
    binary packages (every changed package is, through rebuild_atoms) build_sysext --metapkgs=coreos-base/oem-azure
    installs the files into oem-azure.raw. Left to its old binary package (the flatcar/Flatcar#473 trap), the OEM
    sysext is built from the binpkg's recorded RDEPEND and the files are missing, as with the real emerge
    --usepkgonly. `sysext: <name>` puts the package in sysext_packages, which build_sysext installs."""
    from ansible_collections.kiln.flatcar.plugins.module_utils import _mods

    src = tmp_path / "oemconf"
    src.mkdir()
    (src / "agent.conf").write_text("KILN_OEM_FILE=1\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "tool.txt").write_text("KILN_SYSEXT_FILE=1\n")

    def git(args, env=None):
        e = dict(os.environ, **(env or {}))
        return subprocess.run(["git", "-C", str(board.co)] + list(args), capture_output=True, text=True, check=True, env=e).stdout

    mods = _mods.validate_mods([
        {"kind": "files", "src": str(src), "dest": "/usr/share/oem-azure/kiln", "name": "oemconf", "oem": "azure"},
        {"kind": "files", "src": str(tools), "dest": "/usr/share/kiln-tools", "name": "tools", "sysext": "kilntools"}])
    applied = _mods.apply_mods(str(board.co), mods, git)
    assert applied["rebuild_atoms"] == ["coreos-base/oem-azure", "kiln-files/oemconf", "kiln-files/tools"]
    assert applied["sysext_packages"] == {"kilntools": ["kiln-files/tools"]}
    d = board.co / "__build__/images/images" / BOARD / "latest"

    # the trap: only the new packages kept out of binpkgs; oem-azure's old binpkg (no kiln-files/oemconf) is used
    board.build_packages("--usepkg_exclude=kiln-files/oemconf kiln-files/tools")
    board.run("./build_image", f"--board={BOARD}", "--oem_sysexts=azure", "prod", "oem_sysext", "--replace")
    assert (d / "oem-azure_packages.txt").read_text().split() == ["coreos-base/oem-azure-2.12.0.4-r2::coreos-overlay"]
    assert not (sdk.erofs_files(d / "oem-azure.raw", tmp_path / "trap") / "usr/share/oem-azure/kiln").exists()

    # as kiln builds it: every package the mods touched comes from source, and the sysext's packages are build_packages
    # targets beside the default ones (the build role's packages), since build_sysext installs binary packages only
    r = board.build_packages("--usepkg_exclude=" + " ".join(applied["rebuild_atoms"]), "--", "@system",
                             "coreos-devel/board-packages", *applied["sysext_packages"]["kilntools"])
    assert ("source", "coreos-base/oem-azure-2.12.0.4-r2") in [row for i in range(1, 11) for row in emerged(r.output, i)], r.output
    board.run("./build_image", f"--board={BOARD}", "--oem_sysexts=azure", "prod", "oem_sysext", "--replace")
    assert (d / "oem-azure_packages.txt").read_text().split() == [
        "coreos-base/oem-azure-2.12.0.4-r2::coreos-overlay", "kiln-files/oemconf-1::coreos-overlay"]
    oem = sdk.erofs_files(d / "oem-azure.raw", tmp_path / "oem")
    assert (oem / "usr/share/oem-azure/kiln/agent.conf").read_text() == "KILN_OEM_FILE=1\n"
    assert (oem / "usr/share/oem-azure/chrony.conf").is_file()  # the metapackage's own files stay
    assert "SYSEXT_VERSION_ID=2.12.0.4-r2" in (oem / "usr/lib/extension-release.d/extension-release.oem-azure").read_text()
    assert not (d / "oem-qemu.raw").exists()  # --oem_sysexts=azure: that OEM only

    board.run("./build_sysext", f"--board={BOARD}", "--image_builddir=/mnt/host/source/src/build/images/amd64-usr/latest/kt",
              "kilntools", *applied["sysext_packages"]["kilntools"])
    assert (d / "kt/kilntools_packages.txt").read_text().split() == ["kiln-files/tools-1::coreos-overlay"]
    sx = sdk.erofs_files(d / "kt/kilntools.raw", tmp_path / "sx")
    assert (sx / "usr/share/kiln-tools/tool.txt").read_text() == "KILN_SYSEXT_FILE=1\n"
    assert not (sx / "var").exists() and not (sx / "etc").exists()  # only /usr, like the real build_sysext
