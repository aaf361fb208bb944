"""Issue 2: playbooks/build.yml and the build modules against the stand-in SDK, in a real container.

Covers: check mode on a fresh host, the first build and its record (validated against the JSON
Schema), the idempotent rerun (changed=0, no artifact touched), an input change (a patch) rerunning
that stage and everything after it but not the SDK image, failures (a failed step, a full disk) that
mark only their stage failed, and bad input that fails with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jsonschema
import pytest

from kiln_testlib import REPO, run_module, run_playbook
from standin_sdk import fixture as sdk

SDK_VERSION = "4593.2.5"
TAG = "stable-4593.2.5"
SCHEMA = json.load(open(os.path.join(REPO, "docs", "build-record.schema.json"), encoding="utf-8"))
BUILD_YML = os.path.join(REPO, "playbooks", "build.yml")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the stand-in SDK container needs root")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not sdk.dockerd_start():
        pytest.skip("no working docker daemon on this machine")
    base = tmp_path_factory.mktemp("build")
    cache = base / "cache"
    sdk.ensure_sdk_image("all", SDK_VERSION, save_dir=str(cache))
    origin = sdk.make_scripts_origin(base / "origin", tags=[TAG])
    tools = base / "sysext-tools"
    tools.mkdir()
    (tools / "tool.txt").write_text("KILN_SYSEXT_TOOL=1\n")
    yield {"base": base, "cache": str(cache), "origin": origin, "tools": str(tools)}
    sdk.remove_containers("flatcar-sdk-all-4593.2.5_os-4593.2.5-kilntest")


def build_vars(env, checkout, version="4593.2.5+kilntest", **extra):
    values = {
        "kiln_build_hosts": "localhost",
        "kiln_scripts_dir": str(checkout),
        "kiln_scripts_repo": env["origin"],
        "kiln_ref": TAG,
        "kiln_version": version,
        "kiln_board": "amd64-usr",
        "kiln_sdk_source": "cache",
        "kiln_sdk_cache": env["cache"],
        "kiln_sdk_registry": sdk.STANDIN_REGISTRY,
        "kiln_vm_formats": ["qemu_uefi"],
        "kiln_poll_delay": 1,
        # a sysext whose only package a files mod generates: no default target pulls it in, so the packages stage
        # must build it for build_sysext (which installs binary packages only)
        "kiln_mods": [{"kind": "files", "src": env["tools"], "dest": "/usr/share/kiln-tools", "name": "tools", "sysext": "kilntools"}],
        "kiln_sysexts": [{"name": "kilntools"}],
    }
    values.update(extra)
    return values


def record_of(checkout, version="4593.2.5+kilntest", board="amd64-usr"):
    path = os.path.join(checkout, "__build__", "images", "kiln", board, version, "build-record.json")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def mtimes(checkout):
    root = os.path.join(checkout, "__build__", "images", "images")
    found = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            found[full] = os.stat(full).st_mtime_ns
    return found


def changed_tasks(run):
    # task names without the "kiln.flatcar.build : " prefix of the role build.yml runs the sequence through
    return sorted({e["task"].split(" : ")[-1] for e in run.events if e["event"] == "ok" and e["result"].get("changed")})


def kiln_plan(env, checkout):
    """`kiln plan --for build --json` on a localhost inventory; the final JSON line (exit code and plan)."""
    kiln = shutil.which("kiln", path=os.path.dirname(sys.executable))
    if kiln is None:
        pytest.fail("the kiln command is not installed in the venv: make venv")
    inv = env["base"] / "kiln-inventory.json"
    inv.write_text(json.dumps({"all": {"hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    out = subprocess.run([kiln, "plan", "--for", "build", "-i", str(inv), "--json", "-e", json.dumps(build_vars(env, checkout))],
                         capture_output=True, text=True, timeout=600, check=False,
                         env=dict(os.environ, XDG_STATE_HOME=str(env["base"] / "state"),
                                  PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"]))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_build_check_first_run_rerun_and_input_change(env):
    checkout = env["base"] / "scripts"

    # --check on a host that has nothing yet: reports, creates nothing
    run = run_playbook(BUILD_YML, extra_vars=build_vars(env, checkout), check=True)
    assert run.rc == 0, run.stdout[-3000:]
    assert "Check out the scripts repository and pin the version" in changed_tasks(run)
    assert not checkout.exists()

    # the real build
    run = run_playbook(BUILD_YML, extra_vars=build_vars(env, checkout))
    assert run.rc == 0, run.stdout[-5000:]
    rec = record_of(checkout)
    jsonschema.validate(rec, SCHEMA)
    assert rec["version"]["FLATCAR_BUILD_ID"] == "kilntest"
    assert [rec["stages"][s]["status"] for s in ("packages", "image", "vm_image:qemu_uefi")] == ["passed"] * 3
    roles = {o["role"] for o in rec["stages"]["image"]["outputs"]}
    assert {"generic_image", "kernel", "sysext_base", "update_image", "version"} <= roles
    build_dir = os.path.join(checkout, "__build__", "images", rec["build_dir"])
    assert rec["build_dir"] == "images/amd64-usr/developer-4593.2.5+kilntest-a1"
    assert os.path.isfile(os.path.join(build_dir, "flatcar_production_qemu_uefi_image.img"))
    assert rec["stages"]["sysext:kilntools"]["status"] == "passed"
    assert "kiln-files/tools-1" in rec["stages"]["packages"]["details"]["built_from_source"]
    assert rec["stages"]["packages"]["inputs"]["packages"] == ["@system", "coreos-devel/board-packages", "kiln-files/tools"]
    sx = sdk.erofs_files(os.path.join(build_dir, "kilntools.raw"), env["base"] / "kilntools-files")
    assert (sx / "usr/share/kiln-tools/tool.txt").read_text() == "KILN_SYSEXT_TOOL=1\n"
    # the pinned build id reached every step (Flatcar#2041): the image's version.txt agrees with ours
    with open(os.path.join(build_dir, "version.txt"), encoding="utf-8") as fh:
        assert "FLATCAR_VERSION=4593.2.5+kilntest" in fh.read()
    # version.txt was written once and not rewritten by run_sdk_container
    with open(os.path.join(checkout, "sdk_container/.repo/manifests/version.txt"), encoding="utf-8") as fh:
        assert 'FLATCAR_BUILD_ID="kilntest"' in fh.read()
    before = mtimes(checkout)

    # rerun with unchanged inputs: changed=0 and no artifact touched
    run = run_playbook(BUILD_YML, extra_vars=build_vars(env, checkout))
    assert run.rc == 0, run.stdout[-3000:]
    assert run.changed_total() == 0, changed_tasks(run)
    assert mtimes(checkout) == before

    # --check after a build: nothing would change
    run = run_playbook(BUILD_YML, extra_vars=build_vars(env, checkout), check=True)
    assert run.rc == 0 and run.changed_total() == 0, changed_tasks(run)

    # kiln plan (the kiln command, check mode through ansible-runner) says the same, then names the stage whose
    # output went missing and why; the output comes back and the plan is empty again
    plan = kiln_plan(env, checkout)
    assert plan["exit_code"] == 0 and not [s for s in plan["plan"] if s["changed"]], plan["plan"]
    assert {"packages", "image", "vm_image:qemu_uefi"} <= {s["stage"] for s in plan["plan"]}
    vm_img = os.path.join(build_dir, "flatcar_production_qemu_uefi_image.img")
    os.rename(vm_img, vm_img + ".aside")
    try:
        plan = kiln_plan(env, checkout)
    finally:
        os.rename(vm_img + ".aside", vm_img)
    would = [s for s in plan["plan"] if s["changed"]]
    assert [s["stage"] for s in would] == ["vm_image:qemu_uefi"] and "flatcar_production_qemu_uefi_image.img" in would[0]["reason"], would
    assert mtimes(checkout) == before

    # one input changes (a patch): the checkout and every later stage rerun, the SDK image does not
    patch = env["base"] / "0001-hotfix.patch"
    (checkout / "HOTFIX").write_text("embargoed fix\n")
    subprocess.run(["git", "-C", str(checkout), "add", "HOTFIX"], check=True)
    subprocess.run(["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                    "-m", "hotfix: embargoed fix"], check=True, capture_output=True)
    subprocess.run(["git", "-C", str(checkout), "format-patch", "-1", "--stdout"], check=True, stdout=open(patch, "w"))
    subprocess.run(["git", "-C", str(checkout), "reset", "-q", "--hard", "HEAD~1"], check=True)
    run = run_playbook(BUILD_YML, extra_vars=build_vars(env, checkout, kiln_patches=[str(patch)]))
    assert run.rc == 0, run.stdout[-3000:]
    changed = changed_tasks(run)
    assert "Check out the scripts repository and pin the version" in changed
    assert "Make the SDK container image present" not in changed
    assert "Wait for packages" in changed and "Wait for the image" in changed and "Make VM images (image_to_vm.sh)" in changed
    rec2 = record_of(checkout)
    assert rec2["stages"]["image"]["details"]["attempt"] == 2  # the previous attempt's artifacts are kept
    assert os.path.isdir(build_dir)
    assert rec2["stages"]["packages"]["inputs"]["scripts_commit"] != rec["stages"]["packages"]["inputs"]["scripts_commit"]

    # a failed step: one line, its stage failed, earlier stages and their outputs intact
    sdk.set_fail(checkout, "build_image")
    try:
        res, run = run_module("kiln.flatcar.image", {
            "scripts_dir": str(checkout), "board": "amd64-usr", "force": True, "sdk_registry": sdk.STANDIN_REGISTRY})
    finally:
        sdk.set_fail(checkout, None)
    assert res.get("failed") and "\n" not in res["msg"]
    assert res["msg"].startswith("build_image failed for amd64-usr")
    assert res["log_path"].endswith("logs/image.log") and res["log_tail"]
    rec3 = record_of(checkout)
    assert rec3["stages"]["image"]["status"] == "failed"
    assert rec3["stages"]["packages"]["status"] == "passed"
    assert rec3["stages"]["packages"]["outputs"] == rec2["stages"]["packages"]["outputs"]
    # the next run rebuilds the failed stage only
    run = run_playbook(BUILD_YML, extra_vars=build_vars(env, checkout, kiln_patches=[str(patch)]))
    assert run.rc == 0, run.stdout[-3000:]
    changed = changed_tasks(run)
    assert "Wait for the image" in changed and "Wait for packages" not in changed


@pytest.mark.parametrize(
    "module,args,expect",
    [
        ("kiln.flatcar.packages", {"board": "riscv-usr"}, "value of board must be one of: amd64-usr, arm64-usr, got: riscv-usr"),
        ("kiln.flatcar.vm_image", {"board": "amd64-usr", "formats": ["qemu"]}, "format qemu is not valid any more: use qemu_uefi"),
        ("kiln.flatcar.vm_image", {"board": "amd64-usr", "formats": ["floppy"]}, "unknown VM image format 'floppy'"),
        ("kiln.flatcar.sdk_checkout", {"scripts_dir": "/tmp/kiln-never", "ref": "x", "version": "stable-4593.2"}, "malformed version 'stable-4593.2'"),
        ("kiln.flatcar.image", {"board": "amd64-usr", "scripts_dir": "/nonexistent/scripts"},
         "/nonexistent/scripts is not a Flatcar scripts checkout (no run_sdk_container)"),
    ],
)
def test_bad_input_is_one_line(env, module, args, expect):
    args = dict(args)
    if module != "kiln.flatcar.sdk_checkout":
        args.setdefault("scripts_dir", str(env["base"] / "scripts"))
    res, _run = run_module(module, args)
    assert res.get("failed"), res
    assert "\n" not in res["msg"]
    assert expect in res["msg"]


def test_missing_container_engine(env, tmp_path):
    checkout = tmp_path / "scripts"
    res, _run = run_module("kiln.flatcar.sdk_checkout", {"scripts_dir": str(checkout), "repo": env["origin"], "ref": TAG})
    assert res.get("changed"), res
    res, _run = run_module("kiln.flatcar.packages", {"scripts_dir": str(checkout), "board": "amd64-usr"},
                           task_env={"PATH": "/nonexistent"})
    assert res.get("failed") and "\n" not in res["msg"]
    assert "no container engine found on this host: install docker or podman" in res["msg"]


def test_full_disk_during_a_step(env, tmp_path):
    """A build root on a tiny tmpfs: build_image runs out of space; the message says so in one line."""
    checkout = tmp_path / "scripts"
    version = "4593.2.5+diskfull"
    vars_ = build_vars(env, checkout, version=version, kiln_vm_formats=[])
    res, _run = run_module("kiln.flatcar.sdk_checkout", {"scripts_dir": str(checkout), "repo": env["origin"], "ref": TAG, "version": version})
    assert res.get("changed"), res
    # the image output root on a nearly full tmpfs; kiln's record and logs stay on the real disk
    images = checkout / "__build__" / "images" / "images"
    os.makedirs(images, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(images)], check=True)
    subprocess.run(["dd", "if=/dev/zero", "of=%s/filler" % images, "bs=4k", "count=240"], check=True, capture_output=True)
    try:
        run = run_playbook(BUILD_YML, extra_vars=vars_)
        failed = [e for e in run.events if e["event"] == "failed"]
        assert failed, run.stdout[-3000:]
        res = failed[0]["result"]
        assert "\n" not in res["msg"]
        assert res["msg"].startswith("disk full on the builder"), res["msg"]
    finally:
        sdk.remove_containers("flatcar-sdk-all-4593.2.5_os-4593.2.5-diskfull")
        subprocess.run(["umount", "-l", str(images)], check=False)


def test_local_inventory_check_mode(tmp_path):
    """The shipped inventories/local drives build.yml: --check on a host with nothing yet says what would
    run and touches nothing (no network needed: nothing is cloned in check mode)."""
    run = run_playbook(BUILD_YML, inventory=os.path.join(REPO, "inventories", "local"), check=True,
                       extra_vars={"kiln_workdir": str(tmp_path / "kiln")})
    assert run.rc == 0, run.stdout[-3000:]
    assert changed_tasks(run) == ["Check out the scripts repository and pin the version"]
    assert not (tmp_path / "kiln").exists()
