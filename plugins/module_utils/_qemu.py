# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Booting Flatcar images under QEMU for a smoke check.

* QEMU command lines per board and firmware, shaped like kola's (flatcar/mantle ``platform/qemu.go``):
  amd64 ``-machine q35`` with SeaBIOS or OVMF pflash (code read-only, a private copy of the vars),
  arm64 ``qemu-system-aarch64 -machine virt`` (``-cpu cortex-a57`` under emulation) with AAVMF or the
  image's own ``_efi_code``/``_efi_vars`` files;
* the image is never written: a qcow2 overlay in a private temp dir is what the guest sees
  (``.bin.bz2`` is first decompressed, sparse, into that temp dir);
* Ignition through ``-fw_cfg name=opt/org.flatcar-linux/config,file=...``;
* no guest network (``-nodefaults -nic none``) unless asked for, and then only
  ``-nic user,...,restrict=on,hostfwd=tcp:127.0.0.1:<port>-:22``;
* a KVM probe that really boots a tiny guest with the same ``-accel kvm -cpu host`` a check would use
  (an openable ``/dev/kvm`` proves nothing: PVM hosts have one that cannot run a guest), cached per
  host boot and QEMU binary;
* slots so several checks on one host share its memory and cores instead of overcommitting them;
* a supervisor (``SUPERVISOR_SOURCE``, run as ``python -c``) that owns QEMU: starts it with
  ``PR_SET_PDEATHSIG`` so QEMU dies with it, watches the serial log for markers, enforces the timeout,
  optionally checks the guest over SSH, always kills QEMU, and prints a JSON verdict.
"""

from __future__ import annotations

import bz2
import copy
import errno
import hashlib
import json
import math
import os
import platform
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
import uuid

try:
    import fcntl
except ImportError:  # pragma: no cover - kiln targets are Linux
    fcntl = None

from ansible_collections.kiln.flatcar.plugins.module_utils._record import BOARDS, file_sha256  # noqa: F401  pylint: disable=unused-import
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import one_line

# boards and their architectures, and the one chunked file hash: shared with the build record
ARCHES = BOARDS
QEMU_BINARIES = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}
SERIAL_CONSOLE = {"amd64": "ttyS0", "arm64": "ttyAMA0"}
IGNITION_FW_CFG = "opt/org.flatcar-linux/config"

# What a real Flatcar console shows when the boot reached its goal (systemd >= 253 prints
# "Reached target multi-user.target - Multi-User System.", older ones "Reached target Multi-User System.";
# the getty prints "<hostname> login: ", with flatcar.autologin "... login: core (automatic login)").
DEFAULT_SUCCESS_MARKERS = [r"Reached target (?:multi-user\.target - )?Multi-User System", r"\blogin: "]
# What a real Flatcar (or its firmware) shows when the boot cannot succeed any more.
DEFAULT_FAILURE_MARKERS = [
    r"Kernel panic - not syncing",
    r"Ignition failed",
    r"You are in emergency mode",
    r"Entering emergency mode",
    r"No bootable device",
    r"UEFI Interactive Shell",
    r"Boot Failed\. ",
]

# Where the boot time goes: boundaries between boot phases, in boot order, as console markers. A phase runs
# from the previous boundary seen to the first console line that matches one of its patterns; the last phase
# ("userspace") ends at the success marker. Patterns cover a real Flatcar console (SeaBIOS, OVMF/AAVMF BdsDxe,
# kernel printk, systemd units of the initrd, Ignition) and the stand-in test disk. "printk": the kernel's
# first lines reach the console only when its serial console registers, so the boundary is moved back by the
# printk timestamp of the newest line shown at that moment (the guest clock runs at host speed under TCG and KVM).
PHASE_MARKERS = [
    # firmware: QEMU start until the firmware hands over to a boot loader
    ("firmware", [r"Booting from (?:Hard Disk|ROM|DVD/CD|Floppy)", r"BdsDxe: starting Boot"], False),
    # bootloader: GRUB/systemd-boot/shim loading the kernel and initrd, then the kernel decompressing itself
    ("bootloader", [r"Linux version \d", r"Booting Linux on physical CPU"], True),
    # kernel: from the kernel's first instruction to the initramfs' /init
    ("kernel", [r"Run /init as init process"], False),
    # initramfs: mounting, udev, setup until the first Ignition stage starts
    ("initramfs", [r"Starting (?:ignition-[\w@.-]+ - )?Ignition \("], False),
    # ignition: all Ignition stages
    ("ignition", [r"Reached target (?:ignition-complete\.target - )?Ignition Complete"], False),
]
PHASE_LAST = "userspace"  # Ignition complete until the success marker (switch-root, systemd, getty)
PHASE_NAMES = [name for name, _rx, _printk in PHASE_MARKERS] + [PHASE_LAST]

# Host firmware files per (arch, firmware): (code, vars template); first existing pair wins.
HOST_FIRMWARE = {
    ("amd64", "uefi"): [
        ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
        ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
        ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
        ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
        ("/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"),
        ("/usr/share/qemu/edk2-x86_64-code.fd", "/usr/share/qemu/edk2-i386-vars.fd"),
    ],
    ("arm64", "uefi"): [
        ("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),
        ("/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw", "/usr/share/edk2/aarch64/vars-template-pflash.raw"),
        ("/usr/share/edk2/aarch64/QEMU_EFI-silent-pflash.raw", "/usr/share/edk2/aarch64/vars-template-pflash.raw"),
        ("/usr/share/qemu/edk2-aarch64-code.fd", "/usr/share/qemu/edk2-arm-vars.fd"),
        # unpadded firmware: only usable with -bios
        ("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd", None),
    ],
}
# edk2 (OVMF, AAVMF/ArmVirtQemu, the image's own _efi_code) waits PcdPlatformBootTimeOut seconds for a key
# before it boots (ArmVirtQemu: 5 s, silently on a serial-only guest). With "-boot menu=on,splash-time=0" QEMU
# hands it a 0 s timeout through fw_cfg etc/boot-menu-wait, which PlatformBootManagerLib reads; the boot order
# and everything the guest sees afterwards are unchanged. SeaBIOS does not wait without a menu, so BIOS boots
# do not get it (with menu=on it would print a "Press ESC" prompt).
UEFI_NO_WAIT = ["-boot", "menu=on,splash-time=0"]
SEABIOS = ("/usr/share/seabios/bios-256k.bin", "/usr/share/qemu/bios-256k.bin")
PROBE_MARKER = "KILN-PROBE-OK"


class QemuError(Exception):
    """A problem the caller must fix; the message is one line."""


# ---------------------------------------------------------------------------------------------
# host facts
# ---------------------------------------------------------------------------------------------
def host_arch():
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def board_arch(board):
    try:
        return ARCHES[board]
    except KeyError:
        raise QemuError("unknown board %r: use one of %s" % (board, ", ".join(sorted(ARCHES))))


def meminfo():
    """{'MemTotal': kB, 'MemAvailable': kB, ...} from /proc/meminfo."""
    info = {}
    try:
        with open("/proc/meminfo", "r", encoding="ascii") as fh:
            for line in fh:
                key, _sep, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    info[key] = int(parts[0])
    except OSError:
        pass
    return info


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id", "r", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown"


def free_port():
    """A free TCP port on 127.0.0.1 (QEMU binds it a moment later; a race is reported as a QEMU error)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def new_tag(kind="boot"):
    """A unique name put on the QEMU command line (``-name``): lets anyone find a stray QEMU with pgrep -f."""
    return "kiln-%s-%s" % (kind, uuid.uuid4().hex[:12])


# ---------------------------------------------------------------------------------------------
# images and firmware
# ---------------------------------------------------------------------------------------------
def vendor_firmware(image):
    """For ``<prefix>_image.img`` (image_to_vm.sh qemu_uefi output) the sibling ``<prefix>_efi_code.qcow2``
    and ``<prefix>_efi_vars.qcow2`` (or ``.fd``), when they exist."""
    base = os.path.basename(image)
    directory = os.path.dirname(os.path.abspath(image))
    if "_image." not in base:
        return None, None
    prefix = base.split("_image.", 1)[0]
    found = []
    for kind in ("code", "vars"):
        path = None
        for ext in ("qcow2", "fd"):
            cand = os.path.join(directory, "%s_efi_%s.%s" % (prefix, kind, ext))
            if os.path.isfile(cand):
                path = cand
                break
        found.append(path)
    return found[0], found[1]


def pick_firmware(arch, firmware, image, efi_code=None, efi_vars=None):
    """``(efi_code, efi_vars, bios, vars_source)`` of a boot: the files given, else the image's own (``qemu_uefi``),
    else the host's. ``vars_source`` is given, image or host (None without UEFI variables). QemuError with one line."""
    if firmware != "uefi":
        return efi_code, efi_vars, host_firmware(arch, "bios")[0], None
    source = "given" if efi_vars else None
    if not efi_code:
        vcode, vvars = vendor_firmware(image)
        if vcode:
            efi_code, efi_vars = vcode, efi_vars or vvars
            source = source or ("image" if vvars else None)
        else:
            efi_code, host_vars = host_firmware(arch, "uefi")
            efi_vars = efi_vars or host_vars
            source = source or ("host" if host_vars else None)
    for f in (efi_code, efi_vars):
        if f and not os.path.isfile(f):
            raise QemuError("UEFI firmware file %s does not exist" % f)
    return efi_code, efi_vars, None, source


def host_firmware(arch, firmware):
    """(code, vars_template) for UEFI, (bios_or_None, None) for BIOS."""
    if firmware == "bios":
        for cand in SEABIOS:
            if os.path.isfile(cand):
                return cand, None
        return None, None  # QEMU's built-in default
    for code, vars_ in HOST_FIRMWARE.get((arch, firmware), []):
        if os.path.isfile(code) and (vars_ is None or os.path.isfile(vars_)):
            return code, vars_
    pkg = "ovmf" if arch == "amd64" else "qemu-efi-aarch64"
    raise QemuError("no %s UEFI firmware found on this host (looked for %s): install %s (the kiln.flatcar.tester role does)"
                    % (arch, ", ".join(c for c, _v in HOST_FIRMWARE.get((arch, firmware), [])), pkg))


def image_format(path, runner, qemu_img):
    """raw or qcow2 (what qemu-img says; raw when it cannot tell)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"QFI\xfb":
        return "qcow2"
    if qemu_img:
        rc, out, _err = runner.capture([qemu_img, "info", "--output=json", path])
        if rc == 0:
            try:
                return json.loads(out).get("format") or "raw"
            except ValueError:
                pass
    return "raw"


def _is_zero(block, _zero=b"\0" * (1024 * 1024)):
    return block == _zero[: len(block)]


def decompress_bz2(src, dest, runner=None):
    """Decompress ``src`` to ``dest`` keeping runs of zeros sparse (a Flatcar image is mostly empty).
    Uses lbzip2/pbzip2 (parallel) through ``dd conv=sparse`` when present, else Python's bz2."""
    tool = None
    if runner is not None:
        for name in ("lbzip2", "pbzip2"):
            tool = runner.module.get_bin_path(name)
            if tool:
                break
    dd = runner.module.get_bin_path("dd") if (runner is not None and tool) else None
    if tool and dd:
        status = dest + ".rc"
        rc, _out, err = runner.capture(
            ["/bin/sh", "-c", '("$1" -dc -- "$2"; echo $? > "$5") | "$3" of="$4" bs=1M conv=sparse status=none || exit $?; '
             'exit "$(cat "$5")"', "kiln-bunzip", tool, src, dd, dest, status])
        try:
            os.unlink(status)
        except OSError:
            pass
        if rc != 0:
            detail = ((err or "").strip().splitlines() or ["rc=%d" % rc])[-1]
            raise QemuError("cannot decompress %s: %s" % (src, detail))
        return dest
    size = 1024 * 1024
    try:
        with bz2.open(src, "rb") as fin, open(dest, "wb") as fout:
            while True:
                block = fin.read(size)
                if not block:
                    break
                if _is_zero(block):
                    fout.seek(len(block), os.SEEK_CUR)
                else:
                    fout.write(block)
            fout.truncate()
    except (OSError, EOFError, ValueError) as exc:
        raise QemuError("cannot decompress %s: %s" % (src, exc))
    return dest


def make_overlay(base, base_fmt, dest, runner, qemu_img):
    if not qemu_img:
        raise QemuError("qemu-img not found: install qemu-utils (the kiln.flatcar.tester role does)")
    rc, out, err = runner.capture([qemu_img, "create", "-q", "-f", "qcow2", "-F", base_fmt, "-b", os.path.abspath(base), dest])
    if rc != 0:
        raise QemuError("qemu-img could not create an overlay on %s: %s" % (base, (err or out).strip().splitlines()[-1:]))
    return dest


# ---------------------------------------------------------------------------------------------
# command lines
# ---------------------------------------------------------------------------------------------
def machine_args(arch, accel, host=None, cpus=1):
    """-machine/-cpu/-accel for a guest ``arch`` on this host, as kola picks them."""
    host = host or host_arch()
    if accel == "kvm":
        if arch == "amd64":
            return ["-machine", "q35,graphics=off", "-accel", "kvm", "-cpu", "host"]
        return ["-machine", "virt,gic-version=3", "-accel", "kvm", "-cpu", "host"]
    tcg = "tcg,thread=multi" if cpus > 1 else "tcg"
    if arch == "amd64":
        return ["-machine", "q35,graphics=off", "-accel", tcg, "-cpu", "max"]
    # kola: "-machine virt -cpu cortex-a57" when emulating arm64 (much faster than -cpu max under TCG)
    return ["-machine", "virt", "-accel", tcg, "-cpu", "cortex-a57"]


def build_command(qemu, arch, accel, tag, console_log, disk, disk_format="qcow2", firmware="bios", bios=None,
                  efi_code=None, efi_code_format="raw", efi_vars=None, efi_vars_format="raw", ignition=None,
                  memory=2048, cpus=2, ssh_port=None, no_reboot=True, extra_args=None, fw_cfg=None):
    """The QEMU argv for one boot check. Nothing here touches the disk; the caller prepared the files."""
    argv = [qemu, "-name", tag, "-nodefaults", "-no-user-config", "-display", "none",
            "-monitor", "none", "-parallel", "none"]
    argv += machine_args(arch, accel, cpus=cpus)
    argv += ["-m", str(int(memory)), "-smp", str(int(cpus))]
    if firmware == "uefi":
        if efi_vars:
            argv += ["-drive", "if=pflash,unit=0,format=%s,readonly=on,file=%s" % (efi_code_format, _drive_path(efi_code)),
                     "-drive", "if=pflash,unit=1,format=%s,file=%s" % (efi_vars_format, _drive_path(efi_vars))]
        else:
            argv += ["-bios", efi_code]
        argv += UEFI_NO_WAIT
    elif bios:
        argv += ["-bios", bios]
    if disk is not None:  # None: the firmware alone (warm_efi_vars)
        argv += ["-drive", "if=none,id=kilndisk,format=%s,file=%s,discard=unmap" % (disk_format, _drive_path(disk)),
                 "-device", "virtio-blk-pci,drive=kilndisk,bootindex=1"]
    argv += ["-device", "virtio-rng-pci"]
    argv += ["-serial", "file:%s" % console_log]
    if ignition:
        argv += ["-fw_cfg", "name=%s,file=%s" % (IGNITION_FW_CFG, _drive_path(ignition))]
    for name, path in sorted((fw_cfg or {}).items()):
        argv += ["-fw_cfg", "name=%s,file=%s" % (name, _drive_path(path))]
    if ssh_port:
        argv += ["-nic", "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22" % int(ssh_port)]
    else:
        argv += ["-nic", "none"]
    if no_reboot:
        argv.append("-no-reboot")
    argv += list(extra_args or [])
    return argv


# The host firmware's variable store after its first power-on (issue 15, docs/performance.md "Boot check"). A fresh
# OVMF/AAVMF VARS template makes the firmware set up its variable store on the first boot: about 1.1 s of the 4-5 s
# OVMF takes under TCG. Every boot check used to pay it, because each copies the template afresh. A machine that has
# been powered on before has done that once; so kiln powers the firmware on once per host and firmware with no disk
# and no network at all, stops it the moment its boot manager starts the first boot option, and keeps that variable
# store as the template. It holds only the firmware's own entries (its built-in shell, its setup UI, the boot order
# between them): nothing of any disk, so every check still boots its image the way a new machine would, through the
# removable-media path the firmware finds on the disk, and a disk with no boot loader still ends in the shell.
WARM_VARS_DONE = [r"BdsDxe: starting Boot", r"BdsDxe: No bootable option"]
WARM_VARS_LAYOUT = 1  # bump when the warm-up itself changes: older warm stores are then not used


def warm_efi_vars(runner, qemu, arch, code, template, cache_dir, timeout=300):
    """``(path, note)``: a warm copy of the host firmware's variable ``template`` in ``cache_dir`` (made once, see
    WARM_VARS_DONE), or ``(None, why)`` when it cannot be made; the caller then copies the template as before.

    The warm store is named after the firmware code and template files (path, size, modification time, inode; not
    their content: AAVMF's are 64 MiB each, read on every boot otherwise), so a firmware update makes a new one. It
    is a regular file of the template's size, written under a temporary name and renamed when complete."""
    try:
        if is_qcow2(template) or is_qcow2(code):
            return None, "a qcow2 firmware file is used as it is"
        ident = []
        for f in (code, template):
            real = os.path.realpath(f)
            st = os.stat(real)
            ident.append([real, st.st_size, st.st_mtime_ns, st.st_ino])
        key = "%s-%s-v%d" % (arch, hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24], WARM_VARS_LAYOUT)
        path = os.path.join(cache_dir, key + ".fd")
        size = ident[1][1]  # the template's
        try:
            cached = os.lstat(path)
            if stat.S_ISREG(cached.st_mode) and cached.st_size == size:
                return path, "warm variable store %s" % path
        except FileNotFoundError:
            pass
        os.makedirs(cache_dir, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".warm-", dir=cache_dir)
    except OSError as exc:
        return None, "cannot prepare a warm variable store: %s" % exc
    try:
        tmp_vars = os.path.join(work, "vars.fd")
        shutil.copyfile(template, tmp_vars)
        console = os.path.join(work, "console.log")
        argv = build_command(qemu, arch, "tcg", new_tag("warm"), console, None, firmware="uefi", efi_code=code,
                             efi_vars=tmp_vars, memory=256, cpus=1)
        result = supervise(runner, argv, console, os.path.join(work, "qemu.log"), WARM_VARS_DONE, [], timeout,
                           phases=[])
        if result.get("verdict") != "passed":
            return None, "the firmware did not reach its boot manager without a disk (%s)" % (
                result.get("reason") or result.get("verdict"))
        if os.path.getsize(tmp_vars) != size:
            return None, "the firmware changed the size of its variable store"
        os.replace(tmp_vars, path)
        return path, "warm variable store %s (made now in %.1f s)" % (path, result.get("boot_time_s") or 0.0)
    except OSError as exc:
        return None, "cannot make a warm variable store: %s" % exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def boot_efi_vars(runner, qemu, arch, code, template, source, warm, cache_dir):
    """``(template, info)`` for one UEFI boot: the warm store (warm_efi_vars) in place of the host's blank template
    when ``warm``; ``info`` is boot_check's ``efi_vars`` result (source, template, note)."""
    info = {"source": source, "template": template, "note": None}
    if source != "host" or not warm:
        return template, info
    path, note = warm_efi_vars(runner, qemu, arch, code, template, cache_dir)
    if not path:
        info["note"] = one_line(note, 300)
        return template, info
    return path, {"source": "host-warm", "template": path, "note": None}


def _drive_path(path):
    # QEMU option values separate with ','; a literal comma is written ',,'.
    return str(path).replace(",", ",,")


# extra_args is an ALLOW-list: kiln owns networking, the serial console, monitors, debug stubs, displays, files on the
# host and the process lifetime, so only these options pass, each with a value of the form given (re.fullmatch).
_WORD = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
EXTRA_DEVICES = ("virtio-rng-pci", "virtio-rng-device", "virtio-balloon-pci", "virtio-balloon-device", "pvpanic",
                 "pvpanic-pci", "i6300esb")
EXTRA_MACHINE_PROPS = ("graphics", "gic-version", "smm", "kernel-irqchip", "acpi", "hpet", "usb", "vmport", "highmem",
                       "its", "mem-merge", "dump-guest-core")
EXTRA_ALLOWED = {
    # option: (value pattern, what to write)
    "-cpu": (r"%s(,[+-]?%s(=%s)?)*" % (_WORD, _WORD, _WORD), "a CPU model with optional ,+feature/,-feature/,prop=value"),
    "-smp": (r"[0-9]{1,4}(,(cpus|sockets|dies|clusters|cores|threads|maxcpus)=[0-9]{1,4})*", "a number of vCPUs with "
             "optional ,sockets=/cores=/threads= counts"),
    "-m": (r"[0-9]{1,7}[MG]?", "a memory size such as 2048 or 4G"),
    "-machine": (r"(%s|type=%s)(,(%s)=%s)*" % (_WORD, _WORD, "|".join(EXTRA_MACHINE_PROPS), _WORD),
                 "a machine type with optional ,%s=value" % "/,".join(EXTRA_MACHINE_PROPS)),
    "-accel": (r"(kvm|tcg)(,(thread=(single|multi)|tb-size=[0-9]{1,6}|kernel-irqchip=(on|off|split)))*",
               "kvm or tcg with optional ,thread=/,tb-size=/,kernel-irqchip="),
    "-device": (r"(%s)(,id=%s)?" % ("|".join(re.escape(d) for d in EXTRA_DEVICES), _WORD),
                "one of %s (optionally ,id=name)" % ", ".join(EXTRA_DEVICES)),
    "-rtc": (r"(base=(utc|localtime|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2})?)|clock=(host|rt|vm)|"
             r"driftfix=(none|slew))(,(base=(utc|localtime|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2})?)|"
             r"clock=(host|rt|vm)|driftfix=(none|slew)))*", "base=utc|localtime|<date>, clock=host|rt|vm, driftfix=none|slew"),
}
EXTRA_ALIASES = {"-M": "-machine"}


def check_extra_args(args):
    """Refuse any extra QEMU argument that is not an allowed option followed by an allowed value (one line)."""
    args = [a if isinstance(a, str) else str(a) for a in (args or [])]
    allowed = ", ".join(sorted(EXTRA_ALLOWED) + ["-M"])
    i = 0
    while i < len(args):
        flag = args[i]
        if any(ord(c) < 32 or ord(c) == 127 for c in flag):
            raise QemuError("extra QEMU argument %r contains a control character" % flag)
        name = EXTRA_ALIASES.get(flag, flag)
        if name not in EXTRA_ALLOWED:
            raise QemuError("extra QEMU argument %s is not allowed: extra_args takes only %s with their values (kiln owns "
                            "networking, the serial console, monitors, debug stubs, displays and the process lifetime)"
                            % (flag, allowed))
        if i + 1 >= len(args):
            raise QemuError("extra QEMU argument %s needs a value: %s" % (flag, EXTRA_ALLOWED[name][1]))
        value = args[i + 1]
        if not re.fullmatch(EXTRA_ALLOWED[name][0], value):
            raise QemuError("extra QEMU argument %s %r is not allowed: give %s" % (flag, value, EXTRA_ALLOWED[name][1]))
        i += 2
    return args


# (option, lowest, highest) of boot_check: numbers outside these are typos or attacks (a negative timeout, a 10**12 s
# wait); None as lowest means "more than 0"
OPTION_BOUNDS = (("timeout", 1, 86400), ("tcg_timeout_factor", None, 20), ("memory", 128, 1048576), ("cpus", 1, 256),
                 ("max_parallel", 0, 256), ("slot_wait", 0, 604800), ("lock_wait", 0, 604800))


def check_options(params):
    """boot_check's options before anything runs: numbers in range, extra QEMU arguments from the allow-list, markers
    that compile. QemuError with one line."""
    for name, low, high in OPTION_BOUNDS:
        value = params.get(name)
        if value is None or math.isnan(value) or value > high or (value <= 0 if low is None else value < low):
            raise QemuError("%s %s is out of range: give %s to %s" % (name, value, "more than 0" if low is None else low, high))
    check_extra_args(params.get("extra_args"))
    check_markers(params.get("success_markers"), params.get("failure_markers"), params.get("extra_failure_markers"))


def writable_dir(directory, what, min_free=1024 * 1024):
    """Create ``directory`` when needed and make sure a file can be written there with ``min_free`` bytes free;
    QemuError with one line otherwise (a read-only or full destination fails before QEMU starts)."""
    probe = os.path.join(directory, ".kiln-write-test-%d" % os.getpid())
    try:
        os.makedirs(directory, exist_ok=True)
        try:
            with open(probe, "wb") as fh:
                fh.write(b"kiln")
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            if os.path.lexists(probe):
                os.unlink(probe)
        st = os.statvfs(directory)
    except OSError as exc:
        raise QemuError("cannot write the %s in %s: %s: give a writable directory with free space"
                        % (what, directory, exc.strerror or exc))
    free = st.f_bavail * st.f_frsize
    if free < min_free:
        raise QemuError("no room for the %s in %s (%d KiB free, at least %d KiB needed): free space or give another "
                        "directory" % (what, directory, free // 1024, min_free // 1024))
    return directory


# ---------------------------------------------------------------------------------------------
# the supervisor
# ---------------------------------------------------------------------------------------------
SUPERVISOR_SOURCE = r'''
import ctypes, json, os, re, signal, subprocess, sys, time

A = json.loads(sys.argv[1])
LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
PARENT = os.getppid()
LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
if os.getppid() != PARENT:
    sys.exit(3)
ANSI = re.compile(r"\x1b\[[0-9;?=>]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>78cDEHM]")
OUT = {"verdict": "error", "reason": "supervisor did not finish", "matched": [], "failure_marker": None,
       "boot_time_s": None, "qemu_rc": None, "ssh": None}
proc = None
start = time.monotonic()

class Interrupted(Exception):
    pass

def on_signal(signum, _frame):
    raise Interrupted("signal %d" % signum)

for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on_signal)

def child_setup():
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setpgid(0, 0)

def kill_qemu():
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            try:
                proc.kill()
            except OSError:
                pass
    try:
        proc.wait(timeout=15)
    except Exception:
        pass
    OUT["qemu_rc"] = proc.returncode

def tail(path, n=30):
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [l for l in ANSI.sub("", text).replace("\r", "").splitlines() if l.strip()][-n:]

succ = [(m, re.compile(m)) for m in A["success"]]
fail = [(m, re.compile(m)) for m in A["failure"]]
need_all = A.get("match") == "all"
text = ""
scanned = 0
pos = 0
found = {}

def read_console():
    global text, pos
    try:
        with open(A["console_log"], "rb") as fh:
            fh.seek(pos)
            data = fh.read()
    except OSError:
        return
    if data:
        pos += len(data)
        text += ANSI.sub("", data.decode("utf-8", "replace")).replace("\r", "")

def line_at(idx):
    b = text.rfind("\n", 0, idx) + 1
    e = text.find("\n", idx)
    return text[b:e if e >= 0 else len(text)].strip()[:300]

phase_rx = [(name, [re.compile(r) for r in rxs], printk) for name, rxs, printk in A.get("phases") or []]
marks = {}
PRINTK_TIME = re.compile(r"^\[\s*(\d+\.\d+)\]", re.M)

def scan_phases(lo, now):
    """First-seen time of each phase boundary; a printk boundary is moved back to the kernel's start."""
    for name, rxs, printk in phase_rx:
        if name in marks:
            continue
        for rx in rxs:
            hit = rx.search(text, lo)
            if not hit:
                continue
            at = now
            if printk:
                stamps = [float(x) for x in PRINTK_TIME.findall(text, hit.start())]
                if stamps:
                    at = max(0.0, now - max(stamps))
            marks[name] = {"at_s": round(at, 3), "seen_s": now, "line": line_at(hit.start())}
            break

def scan():
    """Return 'failed', 'passed' or None."""
    global scanned, text
    lo = max(0, scanned - 512)
    now = round(time.monotonic() - start, 3)
    scan_phases(lo, now)
    for m, rx in fail:
        hit = rx.search(text, lo)
        if hit:
            OUT["failure_marker"] = {"marker": m, "line": line_at(hit.start()), "at_s": now}
            return "failed"
    for m, rx in succ:
        if m in found:
            continue
        hit = rx.search(text, lo)
        if hit:
            found[m] = {"marker": m, "line": line_at(hit.start()), "at_s": now}
    scanned = len(text)
    if len(text) > 4 * 1024 * 1024:
        cut = len(text) - 1024 * 1024
        text = text[cut:]
        scanned -= cut
    if found and (not need_all or len(found) == len(succ)):
        return "passed"
    return None

def ssh_check(deadline):
    s = A["ssh"]
    argv = [s["ssh"], "-p", str(s["port"]), "-i", s["key"], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no",
            "-F", "/dev/null", "%s@127.0.0.1" % s["user"], s.get("command") or "cat /etc/os-release"]
    res = {"ok": False, "attempts": 0, "version": None, "error": None, "port": s["port"], "user": s["user"]}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            res["error"] = "QEMU exited during the SSH check"
            return res
        res["attempts"] += 1
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=max(1, min(30, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            res["error"] = "ssh timed out"
            continue
        out = r.stdout.decode("utf-8", "replace")
        if r.returncode == 0:
            for line in out.splitlines():
                if line.startswith("VERSION="):
                    res["version"] = line.split("=", 1)[1].strip().strip('"')
            res["output_tail"] = out.splitlines()[-20:]
            want = s.get("expect_version")
            if want and res["version"] != want:
                res["error"] = "guest /etc/os-release has VERSION=%s, expected %s" % (res["version"], want)
                return res
            res["ok"] = True
            res["error"] = None
            return res
        res["error"] = (r.stderr.decode("utf-8", "replace").strip().splitlines() or ["ssh rc=%d" % r.returncode])[-1]
        time.sleep(1)
    res["error"] = "no SSH login within the timeout (%s)" % (res["error"] or "no answer")
    return res

try:
    open(A["console_log"], "wb").close()
    qlog = open(A["qemu_log"], "ab")
    proc = subprocess.Popen(A["argv"], stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT,
                            preexec_fn=child_setup, close_fds=True)
    OUT["qemu_pid"] = proc.pid
    deadline = start + float(A["timeout"])
    verdict = None
    while True:
        read_console()
        verdict = scan()
        if verdict:
            break
        if proc.poll() is not None:
            time.sleep(0.1)
            read_console()
            verdict = scan()
            if not verdict:
                verdict = "exited"
            break
        if time.monotonic() >= deadline:
            verdict = "timeout"
            break
        time.sleep(float(A.get("poll", 0.1)))
    OUT["matched"] = [found[m] for m, _rx in succ if m in found]
    if verdict == "passed":
        OUT["boot_time_s"] = max(v["at_s"] for v in found.values())
        if A.get("ssh"):
            OUT["ssh"] = ssh_check(deadline)
            if not OUT["ssh"]["ok"]:
                verdict = "failed"
                OUT["reason"] = "SSH check failed: %s" % OUT["ssh"]["error"]
    if verdict == "passed":
        OUT["reason"] = "success marker seen after %.1fs" % OUT["boot_time_s"]
    elif verdict == "failed" and OUT["failure_marker"]:
        OUT["reason"] = "failure marker %r on the console: %s" % (OUT["failure_marker"]["marker"], OUT["failure_marker"]["line"])
    elif verdict == "exited":
        verdict = "failed"
        OUT["reason"] = "QEMU exited with rc=%s before a success marker" % proc.returncode
    elif verdict == "timeout":
        OUT["reason"] = "no success marker within %ss" % A["timeout"]
    OUT["verdict"] = verdict
except Interrupted as exc:
    OUT["verdict"] = "interrupted"
    OUT["reason"] = "boot check interrupted (%s)" % exc
except Exception as exc:
    OUT["verdict"] = "error"
    OUT["reason"] = "%s: %s" % (type(exc).__name__, exc)
finally:
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    kill_qemu()
    OUT["elapsed_s"] = round(time.monotonic() - start, 3)
    OUT["phase_marks"] = marks
    OUT["console_tail"] = tail(A["console_log"])
    OUT["qemu_log_tail"] = tail(A["qemu_log"], 15)
    sys.stdout.write(json.dumps(OUT) + "\n")
    sys.stdout.flush()
'''


def boot_phases(marks, end_s=None):
    """Seconds per boot phase (``<name>_s`` for PHASE_NAMES) from the first-seen boundary times in ``marks``.

    A phase ends at its boundary's time; ``userspace`` ends at ``end_s`` (the success marker). A phase whose
    boundary never showed up on the console (a ``quiet`` kernel prints no ``Run /init``; a failed boot stops
    early) is None, and its time is counted in the next phase that was seen.
    """
    phases = {}
    last = 0.0
    for name in PHASE_NAMES:
        at = end_s if name == PHASE_LAST else ((marks or {}).get(name) or {}).get("at_s")
        if at is None:
            phases[name + "_s"] = None
            continue
        at = max(float(at), last)
        phases[name + "_s"] = round(at - last, 2)
        last = at
    return phases


def supervise(runner, argv, console_log, qemu_log, success, failure, timeout, match="any", ssh=None, poll=0.1,
              phases=None):
    """Run QEMU under the supervisor; return its verdict dict (QEMU is gone when this returns).

    The verdict carries ``phase_marks`` (first-seen time of each PHASE_MARKERS boundary, or of ``phases``)
    and ``phases`` (seconds per boot phase, see boot_phases)."""
    args = {
        "argv": [str(a) for a in argv],
        "console_log": console_log,
        "qemu_log": qemu_log,
        "success": list(success),
        "failure": list(failure),
        "match": match,
        "timeout": float(timeout),
        "ssh": ssh,
        "poll": poll,
        "phases": [list(p) for p in (PHASE_MARKERS if phases is None else phases)],
    }
    rc, out, err = runner.capture([sys.executable, "-c", SUPERVISOR_SOURCE, json.dumps(args)])
    for line in reversed((out or "").strip().splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and "verdict" in result:
            result["supervisor_rc"] = rc
            result["phases"] = boot_phases(result.get("phase_marks"), result.get("boot_time_s"))
            return result
    detail = ((err or "").strip().splitlines() or ["no output"])[-1]
    return {"verdict": "error", "reason": "the QEMU supervisor failed (rc=%s): %s" % (rc, detail), "matched": [],
            "failure_marker": None, "boot_time_s": None, "qemu_rc": None, "ssh": None, "console_tail": [],
            "qemu_log_tail": [], "supervisor_rc": rc, "phase_marks": {}, "phases": boot_phases({})}


# ---------------------------------------------------------------------------------------------
# the KVM probe
# ---------------------------------------------------------------------------------------------
def x86_probe_sector(marker=PROBE_MARKER):
    """A 512-byte MBR boot sector: prints ``marker`` on COM1 (0x3f8) and halts."""
    msg = (marker + "\r\n").encode("ascii") + b"\0"
    code = bytearray()
    code += b"\xfa\xfc"                      # cli; cld
    code += b"\x31\xc0\x8e\xd8"              # xor ax,ax; mov ds,ax
    si_at = len(code) + 1
    code += b"\xbe\x00\x00"                  # mov si, msg (patched)
    code += b"\xba\xf8\x03"                  # mov dx, 0x3f8
    loop = len(code)
    code += b"\xac"                          # lodsb
    code += b"\x84\xc0"                      # test al,al
    code += b"\x74\x03"                      # jz done
    code += b"\xee"                          # out dx,al
    code += bytes([0xEB, (loop - (len(code) + 2)) & 0xFF])  # jmp loop
    done = len(code)
    code += b"\xf4"                          # hlt
    code += bytes([0xEB, (done - (len(code) + 2)) & 0xFF])  # jmp done
    addr = 0x7C00 + len(code)
    code[si_at:si_at + 2] = bytes([addr & 0xFF, addr >> 8])
    code += msg
    sector = bytes(code) + b"\0" * (510 - len(code)) + b"\x55\xaa"
    return sector


def arm64_probe_kernel(marker=PROBE_MARKER):
    """A raw AArch64 payload for ``-machine virt -kernel``: prints ``marker`` on the PL011 at 0x09000000."""
    words = [
        0xD2A12000,  # movz x0, #0x0900, lsl #16
        0x100000E1,  # adr  x1, msg (+28)
        0x38401422,  # ldrb w2, [x1], #1
        0x34000062,  # cbz  w2, done (+12)
        0x39000002,  # strb w2, [x0]
        0x17FFFFFD,  # b    loop (-12)
        0xD503207F,  # done: wfi
        0x17FFFFFF,  # b    done
    ]
    blob = b"".join(w.to_bytes(4, "little") for w in words)
    return blob + (marker + "\r\n").encode("ascii") + b"\0" * 4


# The probe's rules; a cached answer of an older probe is not trusted.
PROBE_VERSION = 2
# KVM is used only when it boots the probe guest no slower than this many times TCG (and this many seconds):
# a healthy KVM boots it in a fraction of TCG's time.
KVM_SLOWER_FACTOR = 2.0
KVM_PROBE_SLOW_S = 1.0


def probe_cache_key(qemu):
    try:
        st = os.stat(qemu)
        qid = "%s:%d:%d" % (qemu, st.st_size, int(st.st_mtime))
    except OSError:
        qid = qemu
    return {"host": socket.gethostname(), "boot_id": boot_id(), "kernel": platform.release(), "qemu": qid,
            "probe": PROBE_VERSION}


def kvm_probe(runner, arch, qemu, cache_dir, refresh=False, timeout=20, read_only=False):
    """Whether KVM can really run an ``arch`` guest here: {'usable', 'reason', 'cached', 'cache_path', ...}.

    Boots a tiny guest (an MBR boot sector on amd64, a raw payload on arm64) with ``-accel kvm -cpu host``,
    exactly the acceleration a check would use, then the same guest under TCG: KVM counts as usable only when it
    booted and was not slower than emulation (a nested or paravirtualised KVM, e.g. PVM inside a cloud VM, boots
    the tiny guest 30x slower than TCG and hangs real guests in their firmware). The answer is cached per host
    boot, QEMU binary and probe version.
    ``read_only`` (check mode) returns the cached answer or ``usable=None`` without booting anything.
    """
    info = {"usable": False, "reason": None, "cached": False, "cache_path": None, "probe_s": None}
    if arch != host_arch():
        info["reason"] = "%s guest on a %s host is emulated (TCG)" % (arch, host_arch())
        return info
    if not os.path.exists("/dev/kvm"):
        info["reason"] = "/dev/kvm does not exist"
        return info
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        info["reason"] = "/dev/kvm is not readable and writable by this user"
        return info
    cache_path = os.path.join(cache_dir, "kvm-probe-%s.json" % arch)
    info["cache_path"] = cache_path
    key = probe_cache_key(qemu)
    if not refresh:
        try:
            with open(cache_path, "r", encoding="utf-8") as fh:
                cached = json.load(fh)
            if cached.get("key") == key:
                info.update(usable=bool(cached.get("usable")), reason=cached.get("reason"), cached=True,
                            probe_s=cached.get("probe_s"))
                return info
        except (OSError, ValueError):
            pass
    if read_only:
        info["usable"] = None
        info["reason"] = "not probed yet (check mode boots nothing)"
        return info
    kvm = _probe_boot(runner, arch, qemu, "kvm", timeout)
    usable = kvm.get("verdict") == "passed"
    if usable:
        # Nested or paravirtualised KVM (e.g. PVM in a cloud VM) can boot the tiny guest yet be far slower
        # than emulation, and then hang real guests in firmware: KVM must also beat TCG on the same guest.
        tcg = _probe_boot(runner, arch, qemu, "tcg", timeout)
        k_s, t_s = kvm.get("boot_time_s") or 0.0, tcg.get("boot_time_s")
        if tcg.get("verdict") == "passed" and k_s > max(KVM_SLOWER_FACTOR * (t_s or 0.0), KVM_PROBE_SLOW_S):
            usable = False
            reason = ("KVM booted a test guest in %.2fs but TCG in %.2fs: this KVM is slower than emulation "
                      "(nested or paravirtualised), so TCG is used" % (k_s, t_s or 0.0))
        else:
            reason = "a test guest booted with -accel kvm -cpu host in %.2fs (TCG: %s)" % (
                k_s, "%.2fs" % t_s if t_s is not None else "did not boot")
    else:
        detail = (kvm.get("qemu_log_tail") or [kvm.get("reason") or ""])[-1]
        reason = "a test guest did not boot with -accel kvm -cpu host (%s): %s" % (kvm.get("reason"), detail)
    info.update(usable=usable, reason=" ".join(reason.split()), cached=False, probe_s=kvm.get("elapsed_s"))
    try:
        save_probe(cache_path, key, usable, info["reason"], info["probe_s"])
    except OSError as exc:  # a read-only or full cache_dir: the answer holds for this run, it is just not kept
        info["cache_error"] = "cannot cache the KVM probe in %s: %s" % (cache_path, exc.strerror or exc)
    return info


def _probe_boot(runner, arch, qemu, accel, timeout):
    """Boot the probe guest once with ``accel``; supervise()'s result."""
    import tempfile  # local: only the probe needs it

    tmp = tempfile.mkdtemp(prefix="kiln-kvm-probe-")
    try:
        tag = new_tag("probe")
        console = os.path.join(tmp, "console.log")
        argv = [qemu, "-name", tag, "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
                "-nic", "none", "-m", "64", "-smp", "1", "-no-reboot"] + machine_args(arch, accel)
        if arch == "amd64":
            disk = os.path.join(tmp, "probe.img")
            with open(disk, "wb") as fh:
                fh.write(x86_probe_sector())
                fh.truncate(1024 * 1024)
            argv += ["-drive", "file=%s,format=raw,if=none,id=probe" % _drive_path(disk),
                     "-device", "virtio-blk-pci,drive=probe,bootindex=1"]
        else:
            kernel = os.path.join(tmp, "probe.bin")
            with open(kernel, "wb") as fh:
                fh.write(arm64_probe_kernel())
            argv += ["-kernel", kernel]
        argv += ["-serial", "file:%s" % console]
        return supervise(runner, argv, console, os.path.join(tmp, "qemu.log"), [PROBE_MARKER], [], timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_probe(cache_path, key, usable, reason, probe_s=None):
    from ansible_collections.kiln.flatcar.plugins.module_utils._version import atomic_write

    atomic_write(cache_path, json.dumps({"key": key, "usable": usable, "reason": reason, "probe_s": probe_s,
                                         "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")


KVM_BROKEN_HINTS = ("KVM internal error", "failed to set MSR", "kvm_buf_set_msrs", "kvm run failed",
                    "KVM_RUN failed", "Could not access KVM kernel module", "failed to initialize kvm")


def kvm_failed_at_runtime(result):
    """True when a KVM boot died of KVM itself (then the caller retries under TCG and re-caches)."""
    text = "\n".join(result.get("qemu_log_tail") or [])
    return any(h in text for h in KVM_BROKEN_HINTS)


# ---------------------------------------------------------------------------------------------
# parallel slots
# ---------------------------------------------------------------------------------------------
class Slot:
    """One admitted boot check: holds an flock on ``<dir>/slot-<n>`` until released."""

    def __init__(self, fd, path, index, capacity, waited):
        self.fd = fd
        self.path = path
        self.index = index
        self.capacity = capacity
        self.waited = waited

    def release(self):
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        try:
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None

    def as_dict(self):
        return {"index": self.index, "capacity": self.capacity, "waited_s": round(self.waited, 3), "path": self.path}


# vCPUs of running checks per host core. A booting guest keeps about one vCPU busy (the boot is mostly one thread:
# firmware, boot loader, kernel decompression, init), so its other vCPUs idle. Measured (issue 15, 2-core host, TCG):
# an amd64 and an arm64 boot with 2 vCPUs each, at once, reached their markers in 10.0 s wall; one after the other
# they took 9.5 + 6.4 s. Memory is never overcommitted.
VCPUS_PER_CORE = 2


def capacity(memory_mb, cpus, held_mem_mb=0, max_slots=0, reserve_mb=512):
    """How many checks of this size the host can run at once, counting those already running."""
    mi = meminfo()
    avail_mb = (mi.get("MemAvailable", mi.get("MemFree", 0)) // 1024) + held_mem_mb - reserve_mb
    by_mem = max(1, avail_mb // max(1, memory_mb + 256))  # + QEMU's own overhead
    by_cpu = max(1, (VCPUS_PER_CORE * cpu_count()) // max(1, cpus))
    cap = int(min(by_mem, by_cpu))
    if max_slots:
        cap = min(cap, int(max_slots))
    return max(1, cap)


def acquire_slot(slot_dir, memory_mb, cpus, max_slots=0, wait=3600, poll=0.5):
    """Wait (up to ``wait`` seconds) until this check fits on the host; return a Slot."""
    os.makedirs(slot_dir, exist_ok=True)
    start = time.monotonic()
    gate_path = os.path.join(slot_dir, "gate.lock")
    while True:
        gate = os.open(gate_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(gate, fcntl.LOCK_EX)
            held = []
            for name in sorted(os.listdir(slot_dir)):
                if not name.startswith("slot-"):
                    continue
                path = os.path.join(slot_dir, name)
                live = _slot_alive(path)
                if live is None:
                    continue
                held.append(live)
            held_mem = sum(h.get("memory_mb", 0) for h in held)
            cap = capacity(memory_mb, cpus, held_mem, max_slots)
            if len(held) < cap:
                used = set(h.get("index") for h in held)
                index = next(i for i in range(cap + len(held) + 1) if i not in used)
                path = os.path.join(slot_dir, "slot-%d" % index)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps({"index": index, "memory_mb": memory_mb, "cpus": cpus, "pid": os.getpid()}).encode())
                return Slot(fd, path, index, cap, time.monotonic() - start)
        finally:
            if fcntl is not None:
                fcntl.flock(gate, fcntl.LOCK_UN)
            os.close(gate)
        if time.monotonic() - start > wait:
            raise QemuError("no free boot-check slot on this host after %ds (%d checks running, capacity %d): "
                            "wait for them or raise max_parallel" % (wait, len(held), cap))
        time.sleep(poll)


def _slot_alive(path):
    """The slot's JSON when its holder still holds the lock, else None (stale slots are removed)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    with open(path, "r", encoding="utf-8") as fh:
                        try:
                            return json.load(fh)
                        except ValueError:
                            return {"memory_mb": 0}
                raise
        # nobody holds it: a crashed check left it behind
        try:
            os.unlink(path)
        except OSError:
            pass
        return None
    finally:
        os.close(fd)


# -- what boot_check hands to the engine: markers, the Ignition SSH key, the verdict line ------------------
def check_markers(success_markers, failure_markers, extra_failure_markers):
    """(success, failure) regular expressions with kiln's defaults; QemuError names an invalid one."""
    success = list(success_markers) if success_markers else list(DEFAULT_SUCCESS_MARKERS)
    failure = list(failure_markers if failure_markers is not None else DEFAULT_FAILURE_MARKERS)
    failure += [m for m in extra_failure_markers or [] if m not in failure]
    for m in success + failure:
        try:
            re.compile(m)
        except re.error as exc:
            raise QemuError("marker %r is not a valid regular expression: %s" % (m, exc))
    return success, failure


def with_ssh_key(ignition, user, public_key):
    """A copy of the Ignition config (a minimal one when None) with ``public_key`` authorised for ``user``."""
    ignition = copy.deepcopy(ignition) if ignition else {"ignition": {"version": "3.3.0"}}
    users = ignition.setdefault("passwd", {}).setdefault("users", [])
    entry = next((u for u in users if u.get("name") == user), None)
    if entry is None:
        entry = {"name": user}
        users.append(entry)
    keys = entry.setdefault("sshAuthorizedKeys", [])
    if public_key.strip() not in keys:
        keys.append(public_key.strip())
    return ignition


def is_qcow2(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"QFI\xfb"
    except OSError:
        return path.endswith(".qcow2")


def verdict_message(result, image, board, firmware, accel, console_tail):
    """The one line a boot check that did not pass fails with."""
    last = [line for line in console_tail if line.strip()][-3:]
    msg = "boot check of %s (%s, %s, %s) %s: %s; last console lines: %s" % (
        os.path.basename(image), board, firmware, accel, result["verdict"], result.get("reason"),
        " | ".join(last) if last else "(console empty)")
    qlog = [line for line in result.get("qemu_log_tail") or [] if line.strip()]
    if qlog and result["verdict"] in ("failed", "error") and result.get("qemu_rc") not in (None, -9):
        msg += "; QEMU said: %s" % qlog[-1]
    return msg, qlog
