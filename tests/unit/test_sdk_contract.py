"""Issue 9: the SDK contract (tests/sdk_contract/<release line>.json) and its parser.

* the committed file is exactly what hack/sdk-contract.py makes from the vendor flatcar/scripts
  checkout (regenerate with ``make sdk-contract``);
* the parser reads what kiln depends on: hidden flags after show_help_if_requested, flags of sourced
  files, types and defaults, run_sdk_container's options, the .sdkenv / env_keep lists, image types,
  VM formats, compression formats and output names;
* the checks it offers (command_problems, environment_problems) catch each kind of mismatch.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from kiln_testlib import REPO, VENDOR_SKIP, flatcar_scripts_dir

from ansible_collections.kiln.flatcar.plugins.module_utils import _contract as c

CONTRACT_DIR = os.path.join(REPO, "tests", "sdk_contract")
TOOL = os.path.join(REPO, "hack", "sdk-contract.py")


def committed():
    found = {}
    for path in sorted(glob.glob(os.path.join(CONTRACT_DIR, "*.json"))):
        with open(path, encoding="utf-8") as fh:
            found[os.path.basename(path)[:-5]] = json.load(fh)
    return found


@pytest.fixture(scope="module")
def vendor():
    path = flatcar_scripts_dir()
    if not path:
        pytest.skip(VENDOR_SKIP)
    return path


def test_committed_contract_matches_vendor_checkout(vendor):
    """Regenerating from the vendor checkout gives the committed file byte for byte (make sdk-contract)."""
    out = subprocess.run([sys.executable, TOOL, vendor], check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    line = data["release_line"]
    assert line == c.release_line(c.read_versionfile(vendor)["FLATCAR_VERSION_ID"])
    path = os.path.join(CONTRACT_DIR, line + ".json")
    assert os.path.isfile(path), "no committed contract for release line %s: run make sdk-contract" % line
    with open(path, encoding="utf-8") as fh:
        assert fh.read() == out, "tests/sdk_contract/%s.json is stale: run make sdk-contract" % line


def test_tool_writes_release_line_file(vendor, tmp_path):
    subprocess.run([sys.executable, TOOL, "-o", str(tmp_path), vendor], check=True, capture_output=True)
    names = os.listdir(tmp_path)
    assert len(names) == 1 and names[0] in [k + ".json" for k in committed()]


def test_tool_refuses_a_non_checkout_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, TOOL, str(tmp_path)], check=False, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not a flatcar/scripts checkout" in proc.stderr


def test_every_committed_line_is_complete():
    lines = committed()
    assert lines, "no committed SDK contract under tests/sdk_contract"
    for line, data in lines.items():
        assert data["release_line"] == line
        assert set(data["scripts"]) == set(c.SDK_SCRIPTS), line
        for key in ("image_types", "vm_formats", "compression_formats"):
            assert data[key], (line, key)
        assert data["environment"]["sdkenv"] and data["environment"]["env_keep"], line
        assert data["run_sdk_container"]["options"], line


def test_parser_reads_hidden_sourced_and_typed_flags(vendor):
    flags = c.parse_script_flags(vendor, "build_image")
    # hidden: defined after show_help_if_requested, still accepted by FLAGS "$@"
    assert flags["build_attempt"] == {"type": "integer", "default": "1", "hidden": True}
    assert flags["replace"] == {"type": "boolean", "default": False, "hidden": True}
    assert flags["base_sysexts"]["hidden"] is False and flags["base_sysexts"]["type"] == "string"
    # from build_library/release_util.sh, sourced before FLAGS "$@"
    assert flags["image_compression_formats"]["defined_in"] == "build_library/release_util.sh"
    assert flags["only_store_compressed"] == {"type": "boolean", "default": True, "hidden": False,
                                              "defined_in": "build_library/release_util.sh"}
    # setup_board's hidden flags; image_to_vm.sh's integer --mem
    assert c.parse_script_flags(vendor, "setup_board")["regen_configs"]["type"] == "boolean"
    assert c.parse_script_flags(vendor, "image_to_vm.sh")["mem"]["type"] == "integer"
    assert c.parse_script_flags(vendor, "no_such_script") is None


def test_parser_reads_runner_environment_and_lists(vendor):
    opts = c.parse_run_sdk_container(vendor)
    assert {"-U": {"value": False}, "-n": {"value": True}, "-a": {"value": True}, "-V": {"value": True},
            "--": {"value": False}}.items() <= opts.items()
    env = c.parse_environment(vendor)
    assert {"FLATCAR_BUILD_ID", "COREOS_OFFICIAL", "SYSEXT_SIGNING_KEY_DIR", "USE"} <= set(env["sdkenv"])
    assert "GNUPGHOME" not in env["sdkenv"]  # set up separately, not copied from the host
    assert {"FLATCAR_BUILD_ID", "COREOS_OFFICIAL"} <= set(env["env_keep"])
    assert c.parse_image_types(vendor) == ["container", "oem_sysext", "prod", "prodtar", "sysext"]
    assert "qemu_uefi" in c.parse_vm_formats(vendor) and "qemu" not in c.parse_vm_formats(vendor)
    assert c.parse_compression_formats(vendor) == ["bz2", "gz", "none", "zip", "zst"]


def test_output_names_kiln_relies_on_are_in_every_line():
    """The names kiln looks for in a build directory (image.py, sysext.py, _artifacts.role_of)."""
    from ansible_collections.kiln.flatcar.plugins.module_utils._artifacts import role_of
    relied = {"flatcar_production_image.bin": "generic_image", "flatcar_production_image_sysext.squashfs": "sysext_base",
              "flatcar_production_image.vmlinuz": "kernel", "flatcar_production_update.bin": "update_image",
              "flatcar_production_update.zip": "update_generator", "flatcar_test_update.gz": "test_payload"}
    for line, data in committed().items():
        files = set(data["outputs"]["image_files"])
        for name, role in relied.items():
            assert name in files, (line, name)
            assert role_of(name) == role
        assert data["outputs"]["constants"]["FLATCAR_PRODUCTION_IMAGE_SYSEXT_BASE"] == "flatcar_production_image_sysext.squashfs"


def contract():
    return c.ContractData(committed()[sorted(committed())[-1]])


@pytest.mark.parametrize("argv,problem", [
    (["./build_image", "--board=amd64-usr", "--no_such_flag=1", "prod"], "build_image --no_such_flag"),
    (["./build_image", "--replace=1", "prod"], "build_image --replace as a string (it is a boolean flag: --replace/--noreplace)"),
    (["./build_image", "--group", "prod"], "build_image --group as a switch (it takes a string value)"),
    (["./build_image", "--build_attempt=two", "prod"], "build_image --build_attempt=two (it takes an integer)"),
    (["./build_image", "--nogroup", "prod"], "build_image --nogroup"),
    (["./build_image", "--board=amd64-usr", "floppy"], "build_image image type floppy"),
    (["./build_image", "--image_compression_formats=bz2,rar", "prod"], "build_image compression format rar"),
    (["./image_to_vm.sh", "--format=qemu"], "image_to_vm.sh format qemu"),
    (["./image_to_vm.sh", "--mem=lots"], "image_to_vm.sh --mem=lots (it takes an integer)"),
    (["./no_such_script", "--x"], "no_such_script"),
])
def test_command_problems_name_each_mismatch(argv, problem):
    full = ["./run_sdk_container", "-U", "-n", "c", "-a", "all", "-V", "1.2.3", "--"] + argv
    assert c.command_problems(contract(), full) == [problem]


def test_command_problems_accepts_booleans_both_ways_and_sudo():
    ok = ["./run_sdk_container", "-U", "--", "sudo", "-E", "./build_sysext", "--strip_binaries", "--nogenerate_pkginfo", "--", "x", "--not-a-flag"]
    assert c.command_problems(contract(), ok) == []
    assert c.command_problems(contract(), ["./run_sdk_container", "-Z", "--", "./set_official", "--official"]) == ["run_sdk_container -Z"]


def test_environment_problems():
    con = contract()
    assert c.environment_problems(con, ["FLATCAR_BUILD_ID", "COREOS_OFFICIAL", "SIGNER"]) == []
    assert c.environment_problems(con, ["KILN_SECRET"]) == ["environment variable KILN_SECRET in sdk_container/.sdkenv"]
    # sudo drops what env_keep lacks (SYSEXT_SIGNING_KEY_DIR: upstream runs build_sysext with sudo -E)
    assert c.environment_problems(con, ["SYSEXT_SIGNING_KEY_DIR"], sudo=True) == [
        "environment variable SYSEXT_SIGNING_KEY_DIR in sudo's env_keep (sdk_lib/90_env_keep)"]


def writable_copy(src, dest):
    """A copy of the (read-only) vendor tree that tests may change and pytest may delete."""
    shutil.copytree(src, dest, symlinks=True)
    for root, dirs, files in os.walk(dest):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o200)
    return dest


def test_parse_cache_lives_per_object(vendor, tmp_path):
    """ScriptsContract caches per object only: a new object sees a changed checkout."""
    copy = writable_copy(vendor, tmp_path / "scripts")
    first = c.ScriptsContract(str(copy))
    assert "base_sysexts" in first.flags("build_image")
    path = copy / "build_image"
    path.write_text(path.read_text().replace("DEFINE_string base_sysexts", "DEFINE_string renamed_sysexts"))
    assert "base_sysexts" in first.flags("build_image")  # same stage run: cached
    assert "base_sysexts" not in c.ScriptsContract(str(copy)).flags("build_image")
