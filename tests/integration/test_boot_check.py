"""kiln.flatcar.boot_check: really boots the stand-in Flatcar disks (tests/standin_sdk/disk) under QEMU.

Everything runs under TCG here (the test machines' /dev/kvm is PVM and cannot boot a guest). Boots
take 5-10 s on an idle 2-core machine, several times that under load, so success timeouts are
generous (a passing check returns as soon as the markers appear) and failure tests use markers
that end the boot early wherever the guest prints one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from kiln_testlib import REPO, ansible_env, run_module, VENV_BIN

from ansible_collections.kiln.flatcar.plugins.module_utils import _qemu as q
from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, describe_output, record_path

# one boot-heavy file at a time (tests/integration/conftest.py): prepare_assets.sh, QEMU under TCG
pytestmark = pytest.mark.xdist_group("qemu")

DISK = os.path.join(REPO, "tests", "standin_sdk", "disk")
MKDISK = os.path.join(DISK, "mkdisk.sh")
PREPARE = os.path.join(DISK, "prepare_assets.sh")
VERSION = "4593.2.5+kiln-1"
OK_TIMEOUT = 240  # returns at the marker; only a hung CI machine gets near it
TARGET_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
ENV = {"ANSIBLE_PYTHON_INTERPRETER": TARGET_PYTHON}

needs_qemu = pytest.mark.skipif(
    not (shutil.which("qemu-system-x86_64") and shutil.which("qemu-system-aarch64") and shutil.which("qemu-img")),
    reason="QEMU (qemu-system-x86 qemu-system-arm qemu-utils) is not installed",
)


def boot(args, check=False, timeout=900):
    base = {"memory": 384, "cpus": 1, "tcg_timeout_factor": 1, "cache_dir": CACHE}
    base.update(args)
    res, run = run_module("kiln.flatcar.boot_check", base, check=check, env=ENV, timeout=timeout)
    return res, run


def no_qemu_left(tag="kiln-boot-"):
    """No QEMU with the tag may survive (give a killed one a moment to be reaped)."""
    for _i in range(50):
        rc = subprocess.run(["pgrep", "-f", tag], stdout=subprocess.PIPE, check=False)
        if rc.returncode != 0:
            return True
        time.sleep(0.1)
    raise AssertionError("QEMU survived: %s" % rc.stdout.decode())


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


CACHE = os.path.join(tempfile.gettempdir(), "kiln-test-boot-cache")


def temp_dirs():
    return set(n for n in os.listdir(tempfile.gettempdir()) if n.startswith("kiln-boot-"))


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    if not os.path.exists(MKDISK) or not os.path.exists(PREPARE):
        pytest.skip("the stand-in disk builder (tests/standin_sdk/disk/mkdisk.sh, prepare_assets.sh) is not there yet")
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("QEMU is not installed")
    d = tmp_path_factory.mktemp("disks")
    prep = subprocess.run([PREPARE, "--arch", "all"], capture_output=True, text=True, check=False)
    if prep.returncode != 0:
        pytest.fail("prepare_assets.sh failed:\n%s" % prep.stderr[-3000:])
    out = {}
    for name, board, extra in (("amd64", "amd64-usr", []), ("arm64", "arm64-usr", []),
                               ("broken", "amd64-usr", ["--no-bootloader"])):
        path = str(d / ("%s.bin" % name))
        subprocess.run([MKDISK, "--board", board, "--version", VERSION, "--out", path] + extra, check=True,
                       capture_output=True)
        out[name] = path
    # the generic image as build_image ships it
    bz = str(d / "flatcar_production_image.bin.bz2")
    with open(out["amd64"], "rb") as fin, open(bz, "wb") as fout:
        subprocess.run(["bzip2", "-c"], stdin=fin, stdout=fout, check=True)
    out["amd64_bz2"] = bz
    # the qemu_uefi vendor image with its own firmware (as image_to_vm.sh --format=qemu_uefi lays it out)
    vendor = d / "vendor"
    vendor.mkdir()
    img = str(vendor / "flatcar_production_qemu_uefi_image.img")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", out["arm64"], img], check=True)
    code, vars_ = q.host_firmware("arm64", "uefi")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", code, str(vendor / "flatcar_production_qemu_uefi_efi_code.qcow2")], check=True)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", vars_, str(vendor / "flatcar_production_qemu_uefi_efi_vars.qcow2")], check=True)
    out["arm64_vendor"] = img
    out["dir"] = str(d)
    return out


# --------------------------------------------------------------------------------------------
# fast: command lines, probe payloads, slots, argument checks
# --------------------------------------------------------------------------------------------
def test_command_has_no_network_by_default():
    argv = q.build_command("qemu-system-x86_64", "amd64", "tcg", "kiln-boot-x", "/c.log", "/d.qcow2",
                           firmware="uefi", efi_code="/code.fd", efi_vars="/vars.fd", ignition="/i,gn.json")
    assert "-nodefaults" in argv and argv[argv.index("-nic") + 1] == "none"
    assert not any(a.startswith("-netdev") or a == "-net" for a in argv)
    assert "name=opt/org.flatcar-linux/config,file=/i,,gn.json" in argv
    assert "if=pflash,unit=0,format=raw,readonly=on,file=/code.fd" in argv
    assert argv[argv.index("-name") + 1] == "kiln-boot-x"
    assert argv[argv.index("-machine") + 1].startswith("q35")


def test_command_ssh_forward_is_restricted_and_local():
    argv = q.build_command("qemu-system-aarch64", "arm64", "tcg", "t", "/c.log", "/d.qcow2", firmware="uefi",
                           efi_code="/c.qcow2", efi_code_format="qcow2", efi_vars="/v.qcow2", efi_vars_format="qcow2",
                           ssh_port=2345)
    nic = argv[argv.index("-nic") + 1]
    assert nic == "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:2345-:22"
    assert argv[argv.index("-machine") + 1] == "virt" and argv[argv.index("-cpu") + 1] == "cortex-a57"
    assert argv.count("-nic") == 1


def test_kvm_machine_args():
    assert q.machine_args("amd64", "kvm") == ["-machine", "q35,graphics=off", "-accel", "kvm", "-cpu", "host"]
    assert q.machine_args("arm64", "kvm")[:2] == ["-machine", "virt,gic-version=3"]


def test_extra_args_cannot_add_network():
    for bad in (["-nic", "user"], ["-netdev", "user,id=n"], ["-serial", "stdio"], ["-daemonize"]):
        with pytest.raises(q.QemuError):
            q.check_extra_args(bad)
    q.check_extra_args(["-device", "virtio-rng-pci"])


def test_probe_payloads_are_well_formed():
    sector = q.x86_probe_sector()
    assert len(sector) == 512 and sector[-2:] == b"\x55\xaa" and q.PROBE_MARKER.encode() in sector
    assert q.arm64_probe_kernel().startswith(bytes.fromhex("0020a1d2"))


@needs_qemu
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_probe_payloads_boot_under_tcg(tmp_path, arch):
    """The probe guests are real: they print the marker under emulation (the probe itself uses KVM)."""
    console = str(tmp_path / "c.log")
    if arch == "amd64":
        disk = tmp_path / "p.img"
        disk.write_bytes(q.x86_probe_sector() + b"\0" * (1 << 20))
        extra = ["-drive", "file=%s,format=raw,if=none,id=p" % disk, "-device", "virtio-blk-pci,drive=p,bootindex=1"]
    else:
        kernel = tmp_path / "p.bin"
        kernel.write_bytes(q.arm64_probe_kernel())
        extra = ["-kernel", str(kernel)]
    argv = [shutil.which(q.QEMU_BINARIES[arch]), "-name", "kiln-boot-probetest", "-nodefaults", "-display", "none",
            "-nic", "none", "-m", "64"] + q.machine_args(arch, "tcg") + extra + ["-serial", "file:" + console]

    class R:
        def capture(self, a, **_kw):
            p = subprocess.run(a, capture_output=True, text=True, check=False)
            return p.returncode, p.stdout, p.stderr

    res = q.supervise(R(), argv, console, str(tmp_path / "q.log"), [q.PROBE_MARKER], [], 60)
    assert res["verdict"] == "passed", res
    no_qemu_left("kiln-boot-probetest")


def test_slots_limit_parallel_checks(tmp_path):
    slots = str(tmp_path / "slots")
    first = q.acquire_slot(slots, 256, 1, max_slots=1)
    try:
        with pytest.raises(q.QemuError, match="no free boot-check slot"):
            q.acquire_slot(slots, 256, 1, max_slots=1, wait=0.5, poll=0.1)
        got = []
        t = threading.Thread(target=lambda: got.append(q.acquire_slot(slots, 256, 1, max_slots=1, wait=10, poll=0.1)))
        t.start()
        time.sleep(0.5)
        assert not got
    finally:
        first.release()
    t.join(10)
    assert got and got[0].waited >= 0.4
    got[0].release()
    # a slot whose holder died (lock gone) is reclaimed
    with open(os.path.join(slots, "slot-0"), "w") as fh:
        fh.write("{}")
    again = q.acquire_slot(slots, 256, 1, max_slots=1, wait=1)
    assert again.index == 0
    again.release()


def test_capacity_is_sized_from_memory_and_cores():
    assert q.capacity(256, 1) >= 1
    assert q.capacity(10 ** 7, 1) == 1  # more memory than any host: still one at a time
    assert q.capacity(256, 1, max_slots=1) == 1
    assert q.capacity(256, 10 ** 4) == 1


def test_capacity_lets_two_boots_share_a_core(monkeypatch):
    """A boot keeps about one vCPU busy: vCPUs are counted twice per core, memory never more than once."""
    monkeypatch.setattr(q, "cpu_count", lambda: 2)
    monkeypatch.setattr(q, "meminfo", lambda: {"MemAvailable": 64 * 1024 * 1024})  # kB: 64 GiB
    assert q.capacity(2048, 2) == 2  # the pipeline's two builders on a 2-core host boot at once
    assert q.capacity(2048, 1) == 4
    assert q.capacity(2048, 4) == 1
    assert q.capacity(2048, 2, max_slots=1) == 1
    monkeypatch.setattr(q, "meminfo", lambda: {"MemAvailable": 3 * 1024 * 1024})  # 3 GiB: room for one 2 GiB guest
    assert q.capacity(2048, 1) == 1


def test_bios_is_refused_for_arm64(tmp_path):
    img = tmp_path / "x.bin"
    img.write_bytes(b"\0" * 4096)
    res, _run = boot({"image": str(img), "board": "arm64-usr", "firmware": "bios"})
    assert res["failed"] and "bios is not valid for arm64" in res["msg"]


def test_probe_only_reports_and_caches(tmp_path):
    res, _run = boot({"board": "amd64-usr", "probe_only": True, "refresh_probe": True, "cache_dir": str(tmp_path)})
    assert not res.get("failed"), res
    assert res["accel"] in ("kvm", "tcg") and res["kvm"]["cached"] is False
    res2, _run = boot({"board": "amd64-usr", "probe_only": True, "cache_dir": str(tmp_path)})
    if res["kvm"]["cache_path"]:
        assert res2["kvm"]["cached"] is True and res2["kvm"]["usable"] == res["kvm"]["usable"]
    arm, _run = boot({"board": "arm64-usr", "probe_only": True, "cache_dir": str(tmp_path)})
    if q.host_arch() == "amd64":
        assert arm["accel"] == "tcg" and "emulated" in arm["kvm"]["reason"]
    no_qemu_left("kiln-probe-")


# --------------------------------------------------------------------------------------------
# real boots
# --------------------------------------------------------------------------------------------
def make_record(disks, tmp_path, board="amd64-usr"):
    """A build tree with an image stage recording the stand-in disk as the generic image."""
    build_root = tmp_path / "scripts" / "__build__" / "images"
    out_dir = build_root / "images" / board / ("developer-%s-a1" % VERSION)
    out_dir.mkdir(parents=True)
    img = out_dir / "flatcar_production_image.bin"
    shutil.copyfile(disks["amd64" if board == "amd64-usr" else "arm64"], img)
    path = record_path(str(build_root), board, VERSION)
    with BuildRecord.open(path, board=board, version={"FLATCAR_VERSION": VERSION}, build_root=str(build_root)) as rec:
        rec.begin("image", {"x": 1}, "sha256:" + "0" * 64)
        rec.finish("image", [describe_output(str(build_root), str(img), "generic_image")])
    return path, str(img)


@needs_qemu
def test_amd64_bios_with_ignition_and_record(disks, tmp_path):
    rec_path, img = make_record(disks, tmp_path)
    before = sha256(img)
    tmp_before = temp_dirs()
    ignition = {"ignition": {"version": "3.4.0"},
                "storage": {"files": [{"path": "/etc/kiln-proof", "mode": 420,
                                       "contents": {"source": "data:,booted%20by%20kiln"}}]}}
    res, _run = boot({"record_path": rec_path, "board": "amd64-usr", "firmware": "bios", "ignition": ignition,
                      "timeout": OK_TIMEOUT})
    assert not res.get("failed"), res.get("msg")
    assert res["verdict"] == "passed" and res["changed"] is True
    assert res["accel"] == "tcg" or res["kvm"]["usable"]
    assert 0 < res["boot_time_s"] < OK_TIMEOUT
    # the module returns (and records) where the boot time went
    assert set(res["phases"]) == set(p + "_s" for p in q.PHASE_NAMES) and res["phases"]["kernel_s"] is not None
    assert {m["marker"] for m in res["matched_markers"]} & set(q.DEFAULT_SUCCESS_MARKERS)
    # Ignition really applied: the guest wrote the file and printed its digest on the console
    want = hashlib.sha256(b"booted by kiln").hexdigest()
    console = open(res["console_log"], encoding="utf-8", errors="replace").read()
    assert "ignition wrote /etc/kiln-proof sha256=%s" % want in console
    assert "-nic" in res["qemu_cmd"] and res["qemu_cmd"][res["qemu_cmd"].index("-nic") + 1] == "none"
    no_qemu_left(res["qemu_name"])
    assert sha256(img) == before, "the image was modified"
    assert temp_dirs() <= tmp_before, "temp dir left behind"
    # recorded as stage boot_check:bios with the image sha256 in the inputs
    data = json.load(open(rec_path))
    stage = data["stages"]["boot_check:bios"]
    assert stage["status"] == "passed" and stage["inputs"]["image"]["sha256"] == before
    assert stage["details"]["console_log"] == res["console_log"] and stage["details"]["boot_time_s"] == res["boot_time_s"]
    # current: skipped without booting; force boots again (check mode only reports)
    again, _run = boot({"record_path": rec_path, "board": "amd64-usr", "firmware": "bios", "ignition": ignition})
    assert again["changed"] is False and again["verdict"] == "skipped", again
    forced, _run = boot({"record_path": rec_path, "board": "amd64-usr", "firmware": "bios", "ignition": ignition,
                         "force": True}, check=True)
    assert forced["verdict"] == "would_run" and forced["changed"] is True
    # another Ignition config is another input: not current any more
    other, _run = boot({"record_path": rec_path, "board": "amd64-usr", "firmware": "bios"}, check=True)
    assert other["verdict"] == "would_run"


@needs_qemu
def test_amd64_uefi_from_bz2_with_ssh(disks):
    res, _run = boot({"image": disks["amd64_bz2"], "board": "amd64-usr", "firmware": "uefi", "timeout": OK_TIMEOUT,
                      "memory": 512, "ssh": {"expect_version": VERSION}})
    assert not res.get("failed"), res.get("msg")
    assert res["verdict"] == "passed"
    assert res["ssh"]["ok"] and res["ssh"]["version"] == VERSION
    nic = res["qemu_cmd"][res["qemu_cmd"].index("-nic") + 1]
    assert "restrict=on" in nic and "hostfwd=tcp:127.0.0.1:%d-:22" % res["ssh"]["port"] in nic
    assert any("if=pflash" in a for a in res["qemu_cmd"])
    assert res["efi_vars"]["source"] == "host-warm" and res["efi_vars"]["template"].startswith(CACHE)
    no_qemu_left(res["qemu_name"])


def _utf16(text):
    return text.encode("utf-16-le")


@needs_qemu
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_warm_efi_vars_hold_nothing_of_a_disk(disks, tmp_path, arch):
    """The warm variable store is made once per firmware, from a power-on with no disk: it holds the firmware's own
    boot entries (its shell, its setup UI) and nothing a disk boot adds, so every check still boots its image as a
    new machine would. A boot of the stand-in disk from a copy of it adds the disk's entry to the copy."""
    qemu = shutil.which(q.QEMU_BINARIES[arch])
    code, host_tmpl = q.host_firmware(arch, "uefi")
    tmpl = str(tmp_path / "vars-template.fd")
    shutil.copyfile(host_tmpl, tmpl)
    cache = str(tmp_path / "efi-vars")
    path, note = q.warm_efi_vars(_Capture, qemu, arch, code, tmpl, cache)
    assert path and "made now" in note, note
    assert os.path.dirname(path) == cache and os.path.getsize(path) == os.path.getsize(tmpl)
    with open(path, "rb") as fh:
        warm = fh.read()
    with open(tmpl, "rb") as fh:
        assert fh.read() != warm  # the firmware did write its variables
    assert _utf16("EFI Internal Shell") in warm
    assert os.listdir(cache) == [os.path.basename(path)]  # no temporary left
    again, note = q.warm_efi_vars(_Capture, qemu, arch, code, tmpl, cache)
    assert again == path and "made now" not in note  # once per firmware
    os.utime(tmpl, ns=(10 ** 18, 10 ** 18))  # an updated firmware package: a new warm store
    other, note = q.warm_efi_vars(_Capture, qemu, arch, code, tmpl, cache)
    assert other != path and "made now" in note, note
    if arch == "amd64":
        # OVMF names the virtio disk's boot option "UEFI Misc Device": absent from the warm store, present after a boot
        assert _utf16("UEFI Misc Device") not in warm
        res = supervised_boot(tmp_path, disks[arch], "amd64-uefi")
        assert res["verdict"] == "passed", res
        with open(str(tmp_path / "vars.fd"), "rb") as fh:
            assert _utf16("UEFI Misc Device") in fh.read()


@needs_qemu
def test_warm_efi_vars_fall_back_to_the_template(tmp_path):
    """A firmware that never reaches its boot manager (here: no firmware code at all, QEMU exits) gives no warm store
    and a reason; boot_check then copies the blank template as before."""
    bogus = tmp_path / "code.fd"
    bogus.write_bytes(b"\0" * 4096)
    tmpl = tmp_path / "vars.fd"
    tmpl.write_bytes(b"\0" * 4096)
    path, note = q.warm_efi_vars(_Capture, shutil.which("qemu-system-x86_64"), "amd64", str(bogus), str(tmpl),
                                 str(tmp_path / "cache"), timeout=20)
    assert path is None and "did not reach its boot manager" in note, note
    assert os.listdir(str(tmp_path / "cache")) == []


@needs_qemu
def test_arm64_uefi_vendor_image(disks):
    before = sha256(disks["arm64_vendor"])
    res, _run = boot({"image": disks["arm64_vendor"], "board": "arm64-usr", "firmware": "uefi",
                      "timeout": OK_TIMEOUT, "success_match": "all"})
    assert not res.get("failed"), res.get("msg")
    assert res["verdict"] == "passed" and res["accel"] == "tcg"
    cmd = res["qemu_cmd"]
    assert cmd[0].endswith("qemu-system-aarch64")
    assert any("flatcar_production_qemu_uefi_efi_code.qcow2" in a and "format=qcow2" in a for a in cmd)
    assert res["efi_vars"]["source"] == "image"  # the image's own variables are used as they are, never warmed
    assert len(res["matched_markers"]) == len(q.DEFAULT_SUCCESS_MARKERS)  # all: up to the login prompt
    assert "FLATCAR_BOARD=arm64-usr" in " ".join(res["log_tail"])
    assert not any("\x1b" in line for line in res["log_tail"])
    no_qemu_left(res["qemu_name"])
    assert sha256(disks["arm64_vendor"]) == before


@needs_qemu
def test_arm64_uefi_generic_image_check_mode(disks):
    """The generic arm64 image with the host's AAVMF: check mode shows the command and boots nothing."""
    res, _run = boot({"image": disks["arm64"], "board": "arm64-usr", "timeout": 100, "tcg_timeout_factor": 3}, check=True)
    assert res["verdict"] == "would_run"
    if q.host_arch() == "amd64":
        assert res["timeout_s"] == 450.0  # 100 s x 3 (TCG) x 1.5 (another architecture)
    assert any("AAVMF_CODE" in a or "edk2" in a or "QEMU_EFI" in a for a in res["qemu_cmd"])
    no_qemu_left(res["qemu_name"])


@needs_qemu
@pytest.mark.parametrize("warm", [True, False], ids=["warm-vars", "blank-vars"])
def test_broken_image_uefi_fails_fast(disks, warm):
    """A disk with no boot loader ends in the firmware's shell, from the warm variable store as from the blank one."""
    res, _run = boot({"image": disks["broken"], "board": "amd64-usr", "firmware": "uefi", "timeout": 120,
                      "efi_vars_warm": warm})
    assert res["failed"] and res["verdict"] == "failed"
    assert res["efi_vars"]["source"] == ("host-warm" if warm else "host"), res["efi_vars"]
    assert res["efi_vars"]["note"] is None
    assert res["failure_marker"]["marker"] == "UEFI Interactive Shell"
    assert res["elapsed_s"] < 120
    assert "\n" not in res["msg"] and "last console lines" in res["msg"]
    assert res["log_tail"]
    no_qemu_left(res["qemu_name"])


@needs_qemu
def test_broken_image_bios_times_out_with_tail(disks):
    res, _run = boot({"image": disks["broken"], "board": "amd64-usr", "firmware": "bios", "timeout": 15})
    assert res["failed"] and res["verdict"] == "timeout"
    assert 15 <= res["elapsed_s"] < 30
    assert any("Booting from Hard Disk" in line for line in res["log_tail"]), res["log_tail"]
    assert "Booting from Hard Disk" in res["msg"]
    no_qemu_left(res["qemu_name"])


@needs_qemu
def test_wrong_ignition_file_fails_with_tail(disks, tmp_path):
    bad = tmp_path / "bad.ign"
    bad.write_text('{"ignition": {"version": "9.9.9"}}')
    res, _run = boot({"image": disks["amd64"], "board": "amd64-usr", "firmware": "bios", "ignition": str(bad),
                      "timeout": OK_TIMEOUT})
    assert res["failed"] and res["verdict"] == "failed"
    assert res["failure_marker"]["marker"] in ("Ignition failed", "You are in emergency mode")
    assert "unsupported config version" in res["msg"] or "Ignition failed" in res["msg"]
    assert any("Ignition failed" in line for line in res["log_tail"])
    no_qemu_left(res["qemu_name"])


@needs_qemu
def test_hung_guest_times_out(disks):
    hang = {"ignition": {"version": "3.4.0"},
            "storage": {"files": [{"path": "/etc/kiln-standin/hang", "contents": {"source": "data:,1"}}]}}
    res, _run = boot({"image": disks["amd64"], "board": "amd64-usr", "firmware": "bios", "ignition": hang,
                      "timeout": 30})
    assert res["failed"] and res["verdict"] == "timeout"
    assert 30 <= res["elapsed_s"] < 45
    assert "no success marker within 30.0s" in res["msg"]
    assert res["log_tail"]
    no_qemu_left(res["qemu_name"])


def _alive(pid):
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _ppid(pid):
    with open("/proc/%d/stat" % pid) as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def _descends(pid, ancestor):
    """True when ``ancestor`` is a parent of ``pid`` (a QEMU of another test running in parallel is not)."""
    try:
        while pid > 1:
            pid = _ppid(pid)
            if pid == ancestor:
                return True
    except (OSError, ValueError, IndexError):
        pass
    return False


@needs_qemu
@pytest.mark.parametrize("how", ["playbook-sigterm", "module-sigkill", "supervisor-sigkill"])
def test_interrupted_check_leaves_no_qemu(disks, tmp_path, how):
    """Interrupting a check mid-boot never leaves QEMU behind:

    * playbook-sigterm: ``ansible-playbook`` gets SIGTERM (a CI job cancel, Ctrl-C): the module cleans up;
    * module-sigkill: the module process is SIGKILLed: the supervisor gets PR_SET_PDEATHSIG and kills QEMU;
    * supervisor-sigkill: the supervisor is SIGKILLed: QEMU's own PR_SET_PDEATHSIG kills it.
    """
    pb = tmp_path / "pb.yml"
    args = {"image": disks["amd64"], "board": "amd64-usr", "firmware": "bios", "memory": 384, "cpus": 1,
            "timeout": 600, "tcg_timeout_factor": 1, "cache_dir": CACHE,
            "ignition": {"ignition": {"version": "3.4.0"},
                         "storage": {"files": [{"path": "/etc/kiln-standin/hang", "contents": {"source": "data:,1"}}]}}}
    pb.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False,
                               "tasks": [{"kiln.flatcar.boot_check": args}]}]))
    before = set(int(p) for p in subprocess.run(["pgrep", "-f", "kiln-boot-"], stdout=subprocess.PIPE,
                                                check=False).stdout.split())
    tmp_before = temp_dirs()
    proc = subprocess.Popen([os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", str(pb)],
                            env=ansible_env(ENV), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    qemu = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and qemu is None:
            out = subprocess.run(["pgrep", "-f", "qemu-system-x86_64 -name kiln-boot-"], stdout=subprocess.PIPE,
                                 check=False).stdout.split()
            new = [int(p) for p in out if int(p) not in before and _descends(int(p), proc.pid)]
            qemu = new[0] if new else None
            time.sleep(0.2)
        assert qemu, "QEMU never started"
        time.sleep(1)
        supervisor = _ppid(qemu)
        module = _ppid(supervisor)
        if how == "playbook-sigterm":
            os.killpg(proc.pid, signal.SIGTERM)
        elif how == "module-sigkill":
            os.kill(module, signal.SIGKILL)
        else:
            os.kill(supervisor, signal.SIGKILL)
        for _i in range(100):
            if not _alive(qemu) and not _alive(supervisor):
                break
            time.sleep(0.1)
        assert not _alive(qemu), "QEMU %d survived (%s)" % (qemu, how)
        assert not _alive(supervisor), "the supervisor survived (%s)" % how
        proc.wait(60)  # the play ends on its own: the task failed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    time.sleep(0.5)
    left = temp_dirs() - tmp_before
    if how == "playbook-sigterm":
        assert not left, "temp dir left behind: %s" % left
    for name in left:  # a SIGKILLed module cannot clean up; QEMU is gone all the same
        shutil.rmtree(os.path.join(tempfile.gettempdir(), name), ignore_errors=True)


@needs_qemu
def test_test_playbook_records_and_blocks(disks, tmp_path):
    """playbooks/test.yml boot-checks the recorded image; a changed image fails the play."""
    from kiln_testlib import run_playbook

    rec_path, img = make_record(disks, tmp_path)
    scripts = tmp_path / "scripts"
    vf = scripts / "sdk_container" / ".repo" / "manifests" / "version.txt"
    vf.parent.mkdir(parents=True)
    vf.write_text("FLATCAR_VERSION=%s\nFLATCAR_VERSION_ID=4593.2.5\nFLATCAR_BUILD_ID=kiln-1\n"
                  "FLATCAR_SDK_VERSION=4593.2.5\n" % VERSION)
    extra = {"kiln_test_hosts": "localhost", "kiln_scripts_dir": str(scripts), "kiln_test_boards": ["amd64-usr"],
             "kiln_boot_firmware": {"amd64-usr": ["uefi"]}, "kiln_tester_install_packages": False,
             "kiln_boot_timeout": OK_TIMEOUT, "kiln_boot_tcg_timeout_factor": 1, "kiln_boot_memory": 384,
             "kiln_boot_cpus": 1, "kiln_cache_dir": CACHE}
    run = run_playbook(os.path.join(REPO, "playbooks", "test.yml"), extra_vars=extra, env=ENV)
    assert run.rc == 0, run.stdout[-3000:]
    stage = json.load(open(rec_path))["stages"]["boot_check:uefi"]
    assert stage["status"] == "passed" and stage["details"]["verdict"] == "passed"
    # the image changed after it was recorded: the check refuses, the play fails, later stages never run
    with open(img, "r+b") as fh:
        fh.seek(4096)
        fh.write(b"tampered")
    run = run_playbook(os.path.join(REPO, "playbooks", "test.yml"), extra_vars=extra, env=ENV)
    assert run.rc != 0
    assert "changed since the image stage recorded it" in run.stdout
    no_qemu_left()


# --------------------------------------------------------------------------------------------
# issue 15: per-phase boot timings, and the same verdicts with the faster settings
# --------------------------------------------------------------------------------------------
def test_boot_phases_from_marks():
    marks = {"firmware": {"at_s": 1.0}, "bootloader": {"at_s": 3.5}, "kernel": {"at_s": 5.0},
             "initramfs": {"at_s": 6.0}, "ignition": {"at_s": 6.25}}
    assert q.boot_phases(marks, 7.0) == {"firmware_s": 1.0, "bootloader_s": 2.5, "kernel_s": 1.5, "initramfs_s": 1.0,
                                         "ignition_s": 0.25, "userspace_s": 0.75}
    # a quiet kernel shows no "Run /init": the kernel phase is None and its time goes to the initramfs phase
    quiet = {"firmware": {"at_s": 1.0}, "initramfs": {"at_s": 6.0}}
    assert q.boot_phases(quiet, 7.0) == {"firmware_s": 1.0, "bootloader_s": None, "kernel_s": None, "initramfs_s": 5.0,
                                         "ignition_s": None, "userspace_s": 1.0}
    # a failed boot has no end: the phases stop at the last boundary seen
    assert q.boot_phases({"firmware": {"at_s": 2.0}})["userspace_s"] is None
    # a boundary seen before an earlier one (same console read) never makes a phase negative
    assert q.boot_phases({"firmware": {"at_s": 2.0}, "bootloader": {"at_s": 1.9}}, 3.0)["bootloader_s"] == 0.0


def test_uefi_firmware_does_not_wait_for_a_key():
    """edk2's boot-menu timeout (ArmVirtQemu: 5 s) is set to 0 through fw_cfg; SeaBIOS gets no boot menu."""
    for arch in ("amd64", "arm64"):
        argv = q.build_command("qemu", arch, "tcg", "kiln-boot-x", "/c.log", "/d.qcow2", firmware="uefi",
                               efi_code="/code.fd", efi_vars="/vars.fd")
        assert argv[argv.index("-boot") + 1] == "menu=on,splash-time=0"
    argv = q.build_command("qemu", "amd64", "tcg", "kiln-boot-x", "/c.log", "/d.qcow2", firmware="bios")
    assert "-boot" not in argv


PHASE_MODES = {"amd64-bios": ("amd64", "bios"), "amd64-uefi": ("amd64", "uefi"), "arm64-uefi": ("arm64", "uefi")}


class _Capture:
    @staticmethod
    def capture(argv, **_kw):
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def failure_disks(disks, tmp_path_factory):
    """Stand-in disks that must fail: a kernel panic (no /init: the kernel cannot mount root=LABEL=ROOT itself)
    and a wrong partition layout (partition 9 not labelled ROOT)."""
    d = tmp_path_factory.mktemp("failure-disks")
    out = {}
    for arch in ("amd64", "arm64"):
        panic = str(d / ("%s-panic.bin" % arch))
        subprocess.run([MKDISK, "--board", arch + "-usr", "--version", VERSION, "--out", panic,
                        "--append", "rdinit=/kiln-no-such-init"], check=True, capture_output=True)
        out[(arch, "panic")] = panic
        layout = str(d / ("%s-layout.bin" % arch))
        shutil.copyfile(disks[arch], layout)
        subprocess.run(["sgdisk", "-c", "9:SCRATCH", layout], check=True, capture_output=True)
        out[(arch, "layout")] = layout
    return out


def supervised_boot(tmp_path, image, mode, ignition=None, timeout=OK_TIMEOUT, success=None):
    """One boot through kiln's command builder and supervisor (what boot_check runs), on a qcow2 overlay."""
    arch, firmware = PHASE_MODES[mode]
    overlay = str(tmp_path / "disk.qcow2")
    q.make_overlay(image, "raw", overlay, _Capture, shutil.which("qemu-img"))
    code = vars_ = None
    if firmware == "uefi":
        # the variable store boot_check starts from (efi_vars_warm, on by default)
        code, tmpl = q.host_firmware(arch, "uefi")
        warm, note = q.warm_efi_vars(_Capture, shutil.which(q.QEMU_BINARIES[arch]), arch, code, tmpl,
                                     os.path.join(CACHE, "efi-vars"))
        assert warm, note
        vars_ = str(tmp_path / "vars.fd")
        shutil.copyfile(warm, vars_)
    ign = None
    if ignition is not None:
        ign = str(tmp_path / "ignition.json")
        with open(ign, "w", encoding="utf-8") as fh:
            fh.write(ignition)
    console = str(tmp_path / "console.log")
    tag = q.new_tag("boot")
    argv = q.build_command(shutil.which(q.QEMU_BINARIES[arch]), arch, "tcg", tag, console, overlay, firmware=firmware,
                           bios=q.host_firmware(arch, "bios")[0] if firmware == "bios" else None, efi_code=code,
                           efi_vars=vars_, ignition=ign, memory=384, cpus=1)
    res = q.supervise(_Capture, argv, console, str(tmp_path / "qemu.log"), success or q.DEFAULT_SUCCESS_MARKERS,
                      q.DEFAULT_FAILURE_MARKERS, timeout)
    no_qemu_left(tag)
    return res


@needs_qemu
@pytest.mark.parametrize("mode", sorted(PHASE_MODES))
def test_boot_result_carries_phase_timings(disks, tmp_path, mode):
    res = supervised_boot(tmp_path, disks[PHASE_MODES[mode][0]], mode, ignition='{"ignition": {"version": "3.4.0"}}')
    assert res["verdict"] == "passed", res
    phases = res["phases"]
    assert list(phases) == [p + "_s" for p in q.PHASE_NAMES]
    # the stand-in's console (no "quiet", like real Flatcar) shows every boundary
    assert all(v is not None and v >= 0 for v in phases.values()), (phases, res["phase_marks"])
    assert abs(sum(phases.values()) - res["boot_time_s"]) < 0.05
    assert set(res["phase_marks"]) == set(q.PHASE_NAMES[:-1])
    assert "Linux version" in res["phase_marks"]["bootloader"]["line"] or "Booting Linux" in \
        res["phase_marks"]["bootloader"]["line"]
    # the kernel-start boundary is moved back by the printk clock: before it was seen, after the firmware ended
    marks = res["phase_marks"]
    assert marks["firmware"]["at_s"] <= marks["bootloader"]["at_s"] <= marks["bootloader"]["seen_s"]


FAILURES = [
    # (mode, what, expected verdict, expected failure marker)
    ("amd64-bios", "panic", "failed", "Kernel panic - not syncing"),
    ("amd64-uefi", "panic", "failed", "Kernel panic - not syncing"),
    ("arm64-uefi", "panic", "failed", "Kernel panic - not syncing"),
    ("amd64-uefi", "ignition", "failed", "Ignition failed"),
    ("arm64-uefi", "ignition", "failed", "Ignition failed"),
    ("amd64-bios", "layout", "failed", "You are in emergency mode"),
    ("arm64-uefi", "layout", "failed", "You are in emergency mode"),
    ("arm64-uefi", "marker", "timeout", None),
]


@needs_qemu
@pytest.mark.parametrize("mode,what,verdict,marker", FAILURES, ids=["%s-%s" % (f[0], f[1]) for f in FAILURES])
def test_failure_verdicts_unchanged(disks, failure_disks, tmp_path, mode, what, verdict, marker):
    """The faster settings (cloud kernel, no quiet, edk2 without a boot-menu wait) detect the same failures."""
    arch = PHASE_MODES[mode][0]
    image = failure_disks.get((arch, what), disks[arch])
    ignition = '{"ignition": {"version": "2.3.0"}}' if what == "ignition" else None
    success = [r"kiln-no-such-marker"] if what == "marker" else None
    res = supervised_boot(tmp_path, image, mode, ignition=ignition, timeout=45 if what == "marker" else OK_TIMEOUT,
                          success=success)
    assert res["verdict"] == verdict, res
    if marker:
        assert res["failure_marker"]["marker"] == marker, res["failure_marker"]
    else:
        assert res["reason"] == "no success marker within 45.0s"
        # the boot itself went all the way: every phase boundary was seen
        assert set(res["phase_marks"]) == set(q.PHASE_NAMES[:-1]), res["phase_marks"]
    assert res["phases"]["userspace_s"] is None
