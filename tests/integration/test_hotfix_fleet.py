"""Hotfix and rollback on the netns fleet (issue 12): a release, then kiln.flatcar.hotfix with one patched package.

* The hotfix rebuilds only the patched package from source on both architectures (the rest comes from the release's
  binary packages in the fleet cache), the fix is in the image (its /usr), it passes the same gate (boot check,
  signatures, update payload), is published as <release>+hotfix-1 without moving `current`, and registered in the
  (spec-checked) Nebraska stub on a channel.
* A second hotfix gets +hotfix-2; a rollback points the channel back at the release and is recorded.
* A malformed mod fails at the plan, in check mode, before any host is prepared.
Root only; docker (tests/standin_sdk/dockerd.sh) must work.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fleet.harness import skip_reason  # noqa: E402
from tests.integration import test_pipeline_fleet as tpf  # noqa: E402
from tests.kiln_testlib import ensure_collection_path  # noqa: E402
from tests.standin_sdk import fixture as sdk  # noqa: E402

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

HOTFIX = REPO / "playbooks" / "hotfix.yml"
ROLLBACK = REPO / "playbooks" / "rollback.yml"
RELEASE = tpf.VERSION                      # 4593.2.5+kiln-1
HOTFIX1 = RELEASE + "-hotfix-1"            # the release has a build id: one '+' only
HOTFIX2 = RELEASE + "-hotfix-2"
BOARDS = ("amd64-usr", "arm64-usr")
PKG = "coreos-base/update_engine"
# what the hotfix pins must come from the inventory, not from extra vars (extra vars would override the pins)
PINNED = ("kiln_scripts_repo", "kiln_ref", "kiln_build_id", "kiln_patches", "kiln_sdk_version", "kiln_version")
USER_PATCH_DIR = "sdk_container/src/third_party/coreos-overlay/coreos/user-patches/" + PKG


def _user_patch(marker):
    """A portage user patch for the stand-in update_engine (adds one line to its configuration file)."""
    return ("--- a/update_engine.conf\n+++ b/update_engine.conf\n@@ -1,2 +1,3 @@\n"
            " # stand-in update_engine configuration\n SERVER=https://public.update.flatcar-linux.net/v1/update/\n"
            "+%s\n" % marker)


def make_hotfix_patch(work, origin, name, marker):
    """A `git format-patch` of the scripts repository that adds a user patch for update_engine (what an on-call
    engineer writes: the fix, as a commit on the release's scripts)."""
    co = work / ("patch-" + name)
    subprocess.run(["git", "clone", "-q", origin, str(co)], check=True)
    subprocess.run(["git", "-C", str(co), "checkout", "-q", "stable-" + tpf.SDK_VERSION], check=True)
    d = co / USER_PATCH_DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / ("0001-%s.patch" % name)).write_text(_user_patch(marker))
    subprocess.run(["git", "-C", str(co), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(co), "-c", "user.name=oncall", "-c", "user.email=oncall@example.invalid",
                    "commit", "-qm", "update_engine: " + name], check=True)
    out = subprocess.run(["git", "-C", str(co), "format-patch", "-1", "-o", str(work / "patches")],
                         capture_output=True, text=True, check=True).stdout.strip()
    return out


def prepare(work, name_prefix="khf"):
    """A fleet with the release services (Nebraska stub, mirror HTTP) whose pinned variables live in the inventory
    (group_vars/all.json), as in an IaC repository, so the hotfix's facts override them. Used by bench/bench_hotfix.py."""
    fleet, gen, fid = tpf.prepare_fleet(work, name_prefix=name_prefix)
    ctx = {"fleet": fleet, "fid": fid, "work": work, "gen": gen, "procs": []}
    try:
        ctx["procs"] = tpf.start_release_services(fleet)
        path = fleet.workdir / "pipeline-vars.json"
        pv = json.loads(path.read_text())
        inv = {k: pv.pop(k) for k in PINNED if k in pv}
        pv["kiln_nebraska_create_channel"] = True
        # a release as the example inventory builds it: the OEM sysexts and a VM image (whose OEM partition carries
        # the qemu OEM sysext), which the hotfix pins from the release's record
        pv["kiln_image_types"] = ["prod", "oem_sysext"]
        pv["kiln_vm_formats"] = ["qemu_uefi"]
        path.write_text(json.dumps(pv))
        gv = fleet.workdir / "group_vars"
        gv.mkdir(exist_ok=True)
        (gv / "all.json").write_text(json.dumps(inv))
        for h in ("b-amd64", "b-arm64"):  # container names may not hold '+'
            hv = fleet.workdir / "host_vars" / ("%s.json" % h)
            v = json.loads(hv.read_text())
            v["kiln_sdk_container_name"] = "kiln-%s-%s-{{ kiln_build_id | replace('+', '-') }}" % (fid, h)
            hv.write_text(json.dumps(v))
        ctx["origin"] = inv["kiln_scripts_repo"]
    except BaseException:
        finish(ctx)
        raise
    return ctx


def finish(ctx):
    tpf.stop_release_services(ctx["procs"])
    tpf.finish_fleet(ctx["fleet"], ctx["gen"], ctx["fid"])


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    ctx = prepare(tmp_path_factory.mktemp("hotfix"))
    try:
        yield ctx
    finally:
        finish(ctx)


def play(fleet, playbook, *extra, timeout=1500, env=None):
    envv = {"ANSIBLE_COLLECTIONS_PATH": ensure_collection_path(), "ANSIBLE_NOCOLOR": "1", **(env or {})}
    return fleet.ansible_playbook(str(playbook), "-e", "@%s" % (fleet.workdir / "pipeline-vars.json"), *extra,
                                  env=envv, timeout=timeout)


def record(fleet, host, board, version):
    return tpf.record_of(fleet, host, board, version)


def image_dir(fleet, host, board, version):
    """build_image's output dir of ``version``: [<group>-]<version>[-a<attempt>] (the newest attempt)."""
    base = fleet.host_root(host) / "kiln" / "scripts" / "__build__" / "images" / "images" / board
    dirs = sorted((d for d in base.iterdir() if re.fullmatch(r"(?:[a-z]+-)?%s(?:-a(\d+))?" % re.escape(version), d.name)),
                  key=lambda d: int(d.name.rsplit("-a", 1)[-1]) if re.search(r"-a\d+$", d.name) else 0)
    assert dirs, sorted(p.name for p in base.iterdir())
    return dirs[-1]


def image_file(fleet, host, board, version, inner):
    """A file of the image's /usr (the image's sysext squashfs the stand-in build_image writes), read with unsquashfs."""
    sq = image_dir(fleet, host, board, version) / "flatcar_production_image_sysext.squashfs"
    return subprocess.run(["unsquashfs", "-cat", str(sq), inner], capture_output=True, text=True, check=True).stdout


def oem_partition(qcow2, dest):
    """The files of a qcow2 disk's OEM partition (converted to raw, the partition's ext4 dumped with debugfs)."""
    dest.mkdir(parents=True)
    raw = dest / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True)
    table = subprocess.run(["sgdisk", "-p", str(raw)], capture_output=True, text=True, check=True).stdout
    num = next(line.split()[0] for line in table.splitlines() if line.split()[-1:] == ["OEM"] and line.split()[0].isdigit())
    info = subprocess.run(["sgdisk", "-i", num, str(raw)], capture_output=True, text=True, check=True).stdout
    first, last = (int(re.search(r"^%s sector: (\d+)" % k, info, re.M).group(1)) for k in ("First", "Last"))
    part = dest / "oem.img"
    with open(raw, "rb") as src, open(part, "wb") as out:
        src.seek(first * 512)
        out.write(src.read((last - first + 1) * 512))
    raw.unlink()
    files = dest / "files"
    files.mkdir()
    subprocess.run(["debugfs", "-R", "rdump / %s" % files, str(part)], check=True, capture_output=True)
    return files


def current(fleet, board):
    return (fleet.host_root("mirror") / "mirror" / board / "current").resolve().name


def channel(fleet, name):
    """{arch: package version} of the channel(s) called ``name`` in the Nebraska stub."""
    res = fleet.run_controller(["curl", "-fsS", "--max-time", "10", "-H", "Authorization: Bearer " + tpf.NEBRASKA_TOKEN,
                                "http://127.0.0.1:%d/api/apps/%s/channels?page=1&perpage=50" % (tpf.NEBRASKA_PORT, tpf.FLATCAR_APP)],
                               timeout=30)
    assert res.returncode == 0, res.stderr
    by_id = {p["id"]: p["version"] for p in tpf.nebraska_packages(fleet)}
    return {c["arch"]: by_id.get(c.get("package_id")) for c in json.loads(res.stdout)["channels"] if c["name"] == name}


def hotfix_args(patch):
    return ["-e", "kiln_hotfix_release=" + RELEASE, "-e", json.dumps({"kiln_hotfix_patches": [patch]}),
            "-e", "kiln_hotfix_channel=stable", "-e", "kiln_run_id=hotfix"]


def test_release_then_hotfix_rebuilds_only_the_patched_package(hf):
    fleet = hf["fleet"]
    res = play(fleet, tpf.PIPELINE)
    assert res.returncode == 0, res.stdout[-8000:]
    released = {b: current(fleet, b) for b in BOARDS}
    assert released == {b: RELEASE for b in BOARDS}
    patch = make_hotfix_patch(hf["work"], hf["origin"], "hotfix-a", "KILN_HOTFIX=a")

    # the plan first: check mode prints the version and writes nothing to the mirror
    res = play(fleet, HOTFIX, "--check", *hotfix_args(patch))
    assert res.returncode == 0, res.stdout[-8000:]
    assert "hotfix %s of release %s" % (HOTFIX1, RELEASE) in res.stdout, res.stdout[-6000:]
    assert not any((fleet.host_root("mirror") / "mirror" / b / HOTFIX1).exists() for b in BOARDS)

    t0 = time.monotonic()
    res = play(fleet, HOTFIX, *hotfix_args(patch))
    print("hotfix run: %.1f s" % (time.monotonic() - t0))
    assert res.returncode == 0, res.stdout[-10000:]
    for board, host in zip(BOARDS, ("b-amd64", "b-arm64")):
        rel, fix = record(fleet, host, board, RELEASE), record(fleet, host, board, HOTFIX1)
        # same sources as the release (its commit's base and SDK), the fix on top
        assert fix["source"]["base_commit"] == rel["source"]["base_commit"]
        assert fix["version"]["FLATCAR_SDK_VERSION"] == rel["version"]["FLATCAR_SDK_VERSION"]
        det = fix["stages"]["packages"]["details"]
        src = list(det["built_from_source"])
        assert len(src) == 1 and src[0].startswith(PKG + "-"), det
        assert det["binary"] and not any(c.startswith(PKG + "-") for c in det["binary"]), det
        # the fix is in the image, not only in the build log; the release's image does not have it
        assert "KILN_HOTFIX=a" in image_file(fleet, host, board, HOTFIX1, "usr/share/update_engine/update_engine.conf")
        assert "KILN_HOTFIX" not in image_file(fleet, host, board, RELEASE, "usr/share/update_engine/update_engine.conf")
        # published beside the release, current unchanged, gate passed (boot check) and signed on the signer
        assert (fleet.host_root("mirror") / "mirror" / board / HOTFIX1 / "version.txt").is_file()
        assert current(fleet, board) == RELEASE
        signed = record(fleet, "signer", board, HOTFIX1)
        assert any(k.startswith("boot_check") and v["status"] == "passed" for k, v in signed["stages"].items())
        assert (fleet.host_root("mirror") / "mirror" / "update" / board / HOTFIX1 / "flatcar_production_update.gz").is_file()
    versions = {(p["version"], p["arch"]) for p in tpf.nebraska_packages(fleet)}
    assert {(HOTFIX1, 1), (HOTFIX1, 2), (RELEASE, 1), (RELEASE, 2)} <= versions, versions
    assert channel(fleet, "stable") == {1: HOTFIX1, 2: HOTFIX1}


def test_second_hotfix_gets_the_next_number(hf):
    """The second hotfix also bakes a file into the OEM partition: a `files` mod with `oem: qemu` is installed by the
    OEM sysext's metapackage (rebuilt from source with it), and image_to_vm.sh puts that sysext on the qemu_uefi
    image's OEM partition; the release's image does not have it."""
    fleet = hf["fleet"]
    patch = make_hotfix_patch(hf["work"], hf["origin"], "hotfix-b", "KILN_HOTFIX=b")
    oem_src = hf["work"] / "oem-files"
    oem_src.mkdir()
    (oem_src / "agent.conf").write_text("KILN_OEM=b\n")
    mods = {"kiln_hotfix_mods": [{"kind": "files", "src": str(oem_src), "dest": "/usr/share/kiln-oem", "name": "oem-agent",
                                  "oem": "qemu"}]}
    res = play(fleet, HOTFIX, *hotfix_args(patch), "-e", json.dumps(mods))
    assert res.returncode == 0, res.stdout[-10000:]
    for board, host in zip(BOARDS, ("b-amd64", "b-arm64")):
        assert (fleet.host_root("mirror") / "mirror" / board / HOTFIX2 / "version.txt").is_file()
        assert "KILN_HOTFIX=b" in image_file(fleet, host, board, HOTFIX2, "usr/share/update_engine/update_engine.conf")
        assert current(fleet, board) == RELEASE
        src = record(fleet, host, board, HOTFIX2)["stages"]["packages"]["details"]["built_from_source"]
        assert any(c.startswith("kiln-files/oem-agent-") for c in src) and any(c.startswith("coreos-base/oem-qemu-") for c in src), src
        work = hf["work"] / ("oem-" + board)
        for version, has in ((HOTFIX2, True), (RELEASE, False)):
            d = image_dir(fleet, host, board, version)
            oem = oem_partition(d / "flatcar_production_qemu_uefi_image.img", work / version)
            assert (oem / "sysext" / "active-oem-qemu").is_file()
            sysext = sdk.erofs_files(oem / "sysext" / ("oem-qemu-%s.raw" % version), work / (version + "-sysext"))
            assert (sysext / "usr/share/kiln-oem/agent.conf").is_file() == has, version
        assert (sysext.parent / (HOTFIX2 + "-sysext") / "usr/share/kiln-oem/agent.conf").read_text() == "KILN_OEM=b\n"
    assert channel(fleet, "stable") == {1: HOTFIX2, 2: HOTFIX2}


def test_rollback_points_the_channel_back_and_is_recorded(hf):
    fleet = hf["fleet"]
    # the reason has spaces: one JSON -e (key=value would end it at the first space), as `kiln rollback` passes it
    args = ["-e", json.dumps({"kiln_rollback_from": HOTFIX2, "kiln_rollback_to": RELEASE, "kiln_rollback_channel": "stable",
                              "kiln_rollback_reason": "INC-1: hotfix-b breaks updates"})]
    res = play(fleet, ROLLBACK, "--check", *args)
    assert res.returncode == 0, res.stdout[-8000:]
    assert channel(fleet, "stable") == {1: HOTFIX2, 2: HOTFIX2}  # check mode moved nothing
    res = play(fleet, ROLLBACK, *args)
    assert res.returncode == 0, res.stdout[-8000:]
    assert channel(fleet, "stable") == {1: RELEASE, 2: RELEASE}
    for board in BOARDS:
        st = record(fleet, "signer", board, HOTFIX2)["stages"]["rollback:stable"]
        assert st["status"] == "passed" and st["details"]["reason"] == "INC-1: hotfix-b breaks updates"
        assert st["details"]["to_version"] == RELEASE
        assert current(fleet, board) == RELEASE
        # nothing published is removed
        assert (fleet.host_root("mirror") / "mirror" / board / HOTFIX2 / "version.txt").is_file()
    res = play(fleet, ROLLBACK, *args)
    assert res.returncode == 0 and tpf.recap(res.stdout)["signer"]["changed"] == 0, res.stdout[-6000:]


def test_malformed_mod_fails_at_the_plan_in_check_mode(hf):
    fleet = hf["fleet"]
    bad = {"kiln_hotfix_mods": [{"kind": "kernel_config", "options": ["CONFIG_NFS_FS=maybe"]}]}
    t0 = time.monotonic()
    res = play(fleet, HOTFIX, "--check", "-e", "kiln_hotfix_release=" + RELEASE, "-e", json.dumps(bad), timeout=300)
    print("malformed mod refused after %.1f s" % (time.monotonic() - t0))
    assert res.returncode != 0
    assert "mods[0] (kernel_config)" in res.stdout, res.stdout[-6000:]
    # refused at the plan: no host was prepared, nothing was built
    assert "Prepare and preflight the builder" not in res.stdout and "Build packages" not in res.stdout, res.stdout[-6000:]
