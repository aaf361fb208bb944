"""Boot-to-marker seconds of the stand-in Flatcar disk per boot mode, KVM against TCG where KVM works.

    python bench/bench_boot.py [--runs 2] [--memory 384] [--cpus 1] [--modes amd64-bios,amd64-uefi,arm64-uefi]

Builds the stand-in disks with tests/standin_sdk/disk/mkdisk.sh (assets from prepare_assets.sh), then
boots each mode through kiln's own QEMU command builder and supervisor (plugins/module_utils/_qemu.py)
on a qcow2 overlay, and prints a table: median seconds from QEMU start to the first success marker,
the whole QEMU run, and the KVM/TCG ratio where KVM can run guests (the KVM probe decides, as in a
real boot check). The load average is printed too: TCG timings scale with contention for the cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
from kiln_testlib import ensure_collection_path  # noqa: E402

ensure_collection_path()
from ansible_collections.kiln.flatcar.plugins.module_utils import _qemu as q  # noqa: E402

DISK = os.path.join(REPO, "tests", "standin_sdk", "disk")
MODES = {"amd64-bios": ("amd64-usr", "bios"), "amd64-uefi": ("amd64-usr", "uefi"), "arm64-uefi": ("arm64-usr", "uefi")}


class Runner:
    """The slice of kiln's Runner the QEMU helpers use, without Ansible."""

    class _Module:
        @staticmethod
        def get_bin_path(name, required=False):
            return shutil.which(name)

    module = _Module()

    @staticmethod
    def capture(argv, **_kw):
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        return p.returncode, p.stdout, p.stderr


def boot_once(work, image, board, firmware, accel, memory, cpus, timeout):
    arch = q.ARCHES[board]
    qemu = shutil.which(q.QEMU_BINARIES[arch])
    tmp = tempfile.mkdtemp(prefix="kiln-bench-boot-", dir=work)
    try:
        overlay = os.path.join(tmp, "disk.qcow2")
        q.make_overlay(image, "raw", overlay, Runner, shutil.which("qemu-img"))
        code = vars_copy = None
        if firmware == "uefi":
            code, vars_tmpl = q.host_firmware(arch, "uefi")
            if vars_tmpl:
                vars_copy = os.path.join(tmp, "vars.fd")
                shutil.copyfile(vars_tmpl, vars_copy)
        console = os.path.join(tmp, "console.log")
        argv = q.build_command(qemu, arch, accel, q.new_tag("bench"), console, overlay, firmware=firmware,
                               bios=q.host_firmware(arch, "bios")[0] if firmware == "bios" else None, efi_code=code,
                               efi_vars=vars_copy, memory=memory, cpus=cpus)
        res = q.supervise(Runner, argv, console, os.path.join(tmp, "qemu.log"), q.DEFAULT_SUCCESS_MARKERS,
                          q.DEFAULT_FAILURE_MARKERS, timeout)
        if res["verdict"] != "passed":
            tail = " | ".join(res.get("console_tail", [])[-3:])
            raise SystemExit("%s %s %s did not boot: %s | %s" % (board, firmware, accel, res["reason"], tail))
        return res["boot_time_s"], res["elapsed_s"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--memory", type=int, default=384)
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--dir", default=None, help="scratch directory (default: system temp)")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            raise SystemExit("unknown mode %s: use %s" % (m, ", ".join(MODES)))
    work = tempfile.mkdtemp(prefix="kiln-bench-boot-", dir=args.dir)
    try:
        arches = sorted(set(MODES[m][0].split("-")[0] for m in modes))
        for arch in arches:
            subprocess.run([os.path.join(DISK, "prepare_assets.sh"), "--arch", arch], check=True,
                           stdout=subprocess.DEVNULL)
        images = {}
        for board in sorted(set(MODES[m][0] for m in modes)):
            images[board] = os.path.join(work, board + ".bin")
            subprocess.run([os.path.join(DISK, "mkdisk.sh"), "--board", board, "--version", "4593.2.5",
                            "--out", images[board]], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe_cache = os.path.join(work, "cache")
        rows = []
        for mode in modes:
            board, firmware = MODES[mode]
            arch = q.ARCHES[board]
            kvm = q.kvm_probe(Runner, arch, shutil.which(q.QEMU_BINARIES[arch]), probe_cache)
            accels = (["kvm"] if kvm["usable"] else []) + ["tcg"]
            times = {}
            for accel in accels:
                runs = [boot_once(work, images[board], board, firmware, accel, args.memory, args.cpus, args.timeout)
                        for _i in range(args.runs)]
                times[accel] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                                min(r[0] for r in runs), max(r[0] for r in runs))
            rows.append((mode, times, kvm))
        load = os.getloadavg()
        print("boot to success marker, median of %d run(s), %d MiB, %d vCPU, host %s with %d cores, load %.1f/%.1f/%.1f"
              % (args.runs, args.memory, args.cpus, q.host_arch(), q.cpu_count(), load[0], load[1], load[2]))
        print("%-12s %-5s %10s %10s %15s %10s" % ("mode", "accel", "marker_s", "qemu_s", "range_s", "tcg/kvm"))
        for mode, times, kvm in rows:
            for accel, (med, elapsed, lo, hi) in times.items():
                ratio = ""
                if accel == "tcg" and "kvm" in times:
                    ratio = "%.1fx" % (med / times["kvm"][0])
                print("%-12s %-5s %10.2f %10.2f %7.2f-%-7.2f %10s" % (mode, accel, med, elapsed, lo, hi, ratio))
            if "kvm" not in times:
                print("%-12s %-5s %10s   (%s)" % (mode, "kvm", "n/a", kvm["reason"][:90]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
