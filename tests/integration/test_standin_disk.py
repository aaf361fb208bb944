"""Boot the stand-in Flatcar disks (tests/standin_sdk/disk) in QEMU (TCG).

Builds small GPT disks with mkdisk.sh and checks that they really boot:
amd64 under SeaBIOS (GRUB i386-pc from BIOS-BOOT) and OVMF (systemd-boot),
arm64 under AAVMF (systemd-boot); that the Ignition subset is applied; that a
bad config lands in "emergency mode"; and that a disk without a bootloader
never shows the boot markers.

Needs: qemu-system-x86, qemu-system-arm, ovmf, qemu-efi-aarch64 and the tools
listed in tests/standin_sdk/disk/README.md; network access to the Debian
archive the first time (prepare_assets.sh caches under $KILN_TEST_CACHE).
Run: /work/venv-kiln/bin/python -m pytest tests/integration/test_standin_disk.py -v -s
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

# one boot-heavy file at a time (tests/integration/conftest.py): prepare_assets.sh, QEMU under TCG
pytestmark = pytest.mark.xdist_group("qemu")

REPO = Path(__file__).resolve().parents[2]
DISK_DIR = REPO / "tests" / "standin_sdk" / "disk"
CACHE = Path(os.environ.get("KILN_TEST_CACHE", "/var/cache/kiln-test"))
ASSETS = CACHE / "boot-assets"
VERSION = "4593.2.5"
GROUP = "stable"
BOOT_TIMEOUT = int(os.environ.get("KILN_BOOT_TIMEOUT", "150"))  # TCG; loaded CI hosts are slow
BROKEN_TIMEOUT = 45  # the firmware must say it found no loader within this time
BROKEN_WATCH = 10  # seconds of serial silence after SeaBIOS enters a disk without boot code

# Default markers of a boot checker written for real Flatcar (see README).
MARKERS_OK = (
    "Ignition finished successfully",
    "[  OK  ] Reached target ignition-complete.target - Ignition Complete.",
    "[  OK  ] Reached target multi-user.target - Multi-User System.",
    f"Flatcar Container Linux by Kinvolk {GROUP} {VERSION} for QEMU",
    "login:",
)
FAIL_MARKERS = ("Ignition failed:", "You are in emergency mode", "Kernel panic")

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")

TIMINGS: dict[str, float] = {}


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {' '.join(missing)}")


@pytest.fixture(scope="session")
def assets() -> Path:
    _need("apt-get", "dpkg-deb", "cpio", "grub-mkimage")
    subprocess.run(
        [str(DISK_DIR / "prepare_assets.sh"), "--arch", "all", "--dest", str(ASSETS)],
        check=True,
    )
    return ASSETS


def mkdisk(assets: Path, board: str, out: Path, *extra: str) -> Path:
    _need("sgdisk", "mkfs.vfat", "mcopy", "mkfs.ext4")
    subprocess.run(
        [str(DISK_DIR / "mkdisk.sh"), "--board", board, "--version", VERSION, "--group", GROUP,
         "--assets", str(assets), "--out", str(out), *extra],
        check=True,
    )
    return out


@pytest.fixture(scope="session")
def disks(assets: Path, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("disks")
    return {
        "amd64": mkdisk(assets, "amd64-usr", d / "amd64.img"),
        "arm64": mkdisk(assets, "arm64-usr", d / "arm64.img"),
        "amd64-broken": mkdisk(assets, "amd64-usr", d / "amd64-broken.img", "--no-bootloader"),
        "arm64-broken": mkdisk(assets, "arm64-usr", d / "arm64-broken.img", "--no-bootloader"),
    }


def qemu_argv(mode: str, disk: Path, work: Path, ignition: Path | None,
              cmdline: str = "", nic: str = "none") -> list[str]:
    """QEMU command for mode bios | uefi (amd64) | arm64 (UEFI)."""
    if mode in ("bios", "uefi"):
        argv = ["qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-cpu", "max"]
        if mode == "uefi":
            vars_ = work / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, vars_)
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={vars_}"]
    elif mode == "arm64":
        vars_ = work / "AAVMF_VARS.fd"
        shutil.copyfile(AAVMF_VARS, vars_)
        argv = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_}"]
    else:
        raise ValueError(mode)
    if mode != "bios":
        # as kiln's boot check: edk2 boots at once instead of waiting for a key (AAVMF: 5 s)
        argv += ["-boot", "menu=on,splash-time=0"]
    if mode == "bios":
        # SeaBIOS writes its messages ("Booting from 0000:7c00") to the debug port, not to the serial port
        argv += ["-chardev", f"file,id=fwlog,path={work / 'firmware.log'}",
                 "-device", "isa-debugcon,iobase=0x402,chardev=fwlog"]
    argv += ["-m", "512", "-smp", "1", "-display", "none", "-no-reboot",
             "-serial", f"file:{work / 'console.log'}", "-monitor", "none",
             "-drive", f"if=none,id=d0,format=raw,file={disk}",
             "-device", "virtio-blk-pci,drive=d0", "-nic", nic]
    if ignition is not None:
        argv += ["-fw_cfg", f"name=opt/org.flatcar-linux/config,file={ignition}"]
    if cmdline:
        argv += ["-fw_cfg", f"name=opt/kiln/standin.cmdline,string={cmdline}"]
    return argv


class Boot:
    """A QEMU guest whose serial console goes to work/console.log."""

    def __init__(self, mode: str, disk: Path, work: Path, ignition: dict | str | None = None,
                 cmdline: str = "", nic: str = "none"):
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        self.console = work / "console.log"
        self.disk = work / "disk.img"
        shutil.copyfile(disk, self.disk)  # the guest writes ROOT; keep the source pristine
        ign = None
        if ignition is not None:
            ign = work / "ignition.json"
            ign.write_text(ignition if isinstance(ignition, str) else json.dumps(ignition))
        self.argv = qemu_argv(mode, self.disk, work, ign, cmdline, nic)
        self.proc: subprocess.Popen | None = None
        self.t0 = 0.0

    def __enter__(self) -> "Boot":
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=open(self.work / "qemu.out", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, needles, timeout: float = BOOT_TIMEOUT, fail=FAIL_MARKERS) -> float | None:
        """Seconds since start when every needle was seen; None on timeout/exit/failure."""
        needles = [needles] if isinstance(needles, str) else list(needles)
        deadline = self.t0 + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return time.monotonic() - self.t0
            if any(f in text for f in fail):
                return None
            if self.proc.poll() is not None:
                text = self.text()
                return time.monotonic() - self.t0 if all(n in text for n in needles) else None
            time.sleep(0.1)
        return None


IGNITION = {
    "ignition": {"version": "3.3.0"},
    "storage": {"files": [
        {"path": "/etc/hostname", "mode": 420, "contents": {"source": "data:,kiln-standin%0A"}},
        {"path": "/opt/kiln/hello.txt", "mode": 384,
         "contents": {"source": "data:;base64,aGVsbG8gZnJvbSBraWxuCg=="}},
    ]},
    "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln kiln@test"]}]},
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("mode", ["bios", "uefi", "arm64"])
def test_boot_markers_and_ignition(mode, disks, tmp_path):
    if mode == "arm64":
        _need("qemu-system-aarch64")
        disk = disks["arm64"]
    else:
        _need("qemu-system-x86_64")
        disk = disks["amd64"]
    with Boot(mode, disk, tmp_path, IGNITION, cmdline="kiln.poweroff=1") as b:
        t = b.wait_for(MARKERS_OK)
        text = b.text()
        assert t is not None, f"{mode}: markers missing after {BOOT_TIMEOUT}s:\n{text[-3000:]}"
        TIMINGS[mode] = t
        print(f"\n{mode}: boot-to-login-marker {t:.1f}s")
        # Ignition really ran in the guest and wrote the files into ROOT
        assert f"ignition wrote /etc/hostname sha256={_sha(b'kiln-standin' + bytes([10]))} size=13" in text
        assert f"ignition wrote /opt/kiln/hello.txt sha256={_sha(b'hello from kiln' + bytes([10]))}" in text
        assert "ignition wrote /home/core/.ssh/authorized_keys keys=1" in text
        assert "kiln-standin login:" in text  # hostname from the Ignition file
        # os-release was read from the USR-A partition of this disk
        board = "arm64-usr" if mode == "arm64" else "amd64-usr"
        assert f"ID=flatcar VERSION={VERSION} VERSION_ID={VERSION}" in text
        assert f"FLATCAR_BOARD={board}" in text
        assert not any(f in text for f in FAIL_MARKERS)
        # kiln.poweroff=1 (via fw_cfg) makes the guest power off by itself
        b.proc.wait(timeout=30)


@pytest.mark.parametrize("config,reason", [
    ("{not json", "config is not valid"),
    ('{"ignition": {"version": "2.3.0"}}', "unsupported config version"),
    ('{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/x", '
     '"contents": {"source": "https://example.com/x"}}]}}', "unsupported source scheme"),
])
def test_bad_ignition_enters_emergency(config, reason, disks, tmp_path):
    _need("qemu-system-x86_64")
    with Boot("bios", disks["amd64"], tmp_path, config) as b:
        t = b.wait_for(["You are in emergency mode"], fail=())
        text = b.text()
        assert t is not None, text[-3000:]
        failed_line = next(ln for ln in text.splitlines() if ln.startswith("Ignition failed: "))
        assert reason in failed_line
        assert "[FAILED] Failed to start ignition-files.service" in text
        assert "multi-user.target" not in text and "login:" not in text


def test_hang_before_markers(disks, tmp_path):
    _need("qemu-system-x86_64")
    with Boot("bios", disks["amd64"], tmp_path, IGNITION, cmdline="standin.hang=1") as b:
        assert b.wait_for("standin.hang=1, hanging", timeout=BOOT_TIMEOUT) is not None, b.text()[-2000:]
        time.sleep(2)
        assert b.proc.poll() is None
        assert "Ignition finished successfully" not in b.text()


@pytest.mark.parametrize("mode", ["bios", "uefi", "arm64"])
def test_disk_without_bootloader_never_boots(mode, disks, tmp_path):
    disk = disks["arm64-broken" if mode == "arm64" else "amd64-broken"]
    _need("qemu-system-aarch64" if mode == "arm64" else "qemu-system-x86_64")
    with Boot(mode, disk, tmp_path, IGNITION) as b:
        if mode == "bios":
            # SeaBIOS jumps into the MBR; with no bootloader behind it nothing reaches the serial console.
            # (A good disk's GRUB writes to the serial console 0.35 s after this line; we watch 10 s.)
            fwlog = tmp_path / "firmware.log"
            assert _wait_file_text(fwlog, "Booting from 0000:7c00", BROKEN_TIMEOUT), fwlog.read_text(errors="replace")[-2000:]
            time.sleep(BROKEN_WATCH)
            assert b.text() == "", b.text()[-2000:]
        else:
            # edk2 tries every boot option, finds no loader and drops to its shell: nothing more happens.
            assert _wait_file_text(b.console, "Shell>", BROKEN_TIMEOUT), b.text()[-2000:]
            time.sleep(2)
        text = b.text()
        assert "login:" not in text and "Ignition finished successfully" not in text and "multi-user.target" not in text


def _wait_file_text(path: Path, needle: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ssh_into_amd64_guest(disks, tmp_path):
    """dropbear in the amd64 guest: ssh in with the Ignition key, cat /etc/os-release."""
    _need("qemu-system-x86_64", "ssh", "ssh-keygen")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ign = json.loads(json.dumps(IGNITION))
    ign["passwd"]["users"][0]["sshAuthorizedKeys"] = [(tmp_path / "id_ed25519.pub").read_text().strip()]
    port = _free_port()
    nic = f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22"
    with Boot("bios", disks["amd64"], tmp_path / "vm", ign, nic=nic) as b:
        assert b.wait_for(MARKERS_OK) is not None, b.text()[-3000:]
        deadline = time.monotonic() + 45
        while True:
            r = subprocess.run(
                ["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
                 "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
                 "-o", "BatchMode=yes", "core@127.0.0.1", "cat /etc/os-release; hostname"],
                capture_output=True, text=True, timeout=60, check=False)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert r.returncode == 0, r.stderr
        assert "ID=flatcar" in r.stdout and f"VERSION={VERSION}" in r.stdout
        assert "kiln-standin" in r.stdout


def test_mkdisk_is_deterministic(assets, tmp_path):
    """GPT, MBR boot code, ESP and BIOS-BOOT are byte-identical between builds.

    USR-A/OEM are not: mkfs.ext4 -d of e2fsprogs 1.47.0 (bookworm) stamps inode
    ctimes with the wall clock (SOURCE_DATE_EPOCH support came later).
    """
    a = mkdisk(assets, "amd64-usr", tmp_path / "a.img")
    time.sleep(1.1)
    b = mkdisk(assets, "amd64-usr", tmp_path / "b.img")
    assert a.stat().st_size <= 64 * 1024 * 1024
    out = subprocess.run(["sgdisk", "-i", "3", str(a)], capture_output=True, text=True, check=True).stdout
    usr_start = int(out.split("First sector:")[1].split()[0]) * 512
    da, db = a.read_bytes(), b.read_bytes()
    assert _sha(da[:usr_start]) == _sha(db[:usr_start])
    assert _sha(da[-34 * 512:]) == _sha(db[-34 * 512:])  # backup GPT


def teardown_module(module):
    if TIMINGS:
        print("\nboot-to-marker seconds: " + ", ".join(f"{k}={v:.1f}" for k, v in TIMINGS.items()))
