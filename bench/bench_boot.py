"""Boot-to-marker seconds of the stand-in Flatcar disk per boot mode and per boot phase, before/after, KVM against TCG.

    python bench/bench_boot.py [--runs 2] [--memory 384] [--cpus 1] [--modes amd64-bios,amd64-uefi,arm64-uefi]
                               [--no-before]

Builds the stand-in disks with tests/standin_sdk/disk/mkdisk.sh (assets from prepare_assets.sh), then
boots each mode through kiln's own QEMU command builder and supervisor (plugins/module_utils/_qemu.py)
on a qcow2 overlay, and prints:

* a table per mode and accelerator: median seconds from QEMU start to the first success marker, the
  whole QEMU run, QEMU's CPU seconds (user+sys: less sensitive to other load on the host than wall time),
  and the KVM/TCG ratio where KVM can run guests (the KVM probe decides, as in a real boot check; its
  reason is printed in full when it cannot);
* where the time goes: the median seconds of each boot phase (firmware, bootloader incl. kernel
  decompression, kernel, initramfs, ignition, userspace), from the first-seen times of console markers
  (``phases`` in the boot result);
* "before" against "now" in the same run, interleaved run by run: "before" boots the disk and QEMU
  settings as they were before issue 15 (see BEFORE; its generic-kernel assets are cached in
  $KILN_TEST_CACHE/boot-assets-generic), "now" the current ones, and the ratio now/before per mode and phase.
  "now" UEFI boots start from the host firmware's warm variable store, as boot_check does by default
  (efi_vars_warm; made once per run before the timed boots, its cost printed), "before" from the blank template.

The load average is printed too: TCG timings scale with contention for the cores.
"""

from __future__ import annotations

import argparse
import os
import resource
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
PHASES = [p + "_s" for p in q.PHASE_NAMES]
SHORT = {"firmware_s": "firmw", "bootloader_s": "bootl", "kernel_s": "kernel", "initramfs_s": "initrd",
         "ignition_s": "ignit", "userspace_s": "user"}


def _before_argv(argv):
    """QEMU argv as kiln built it before issue 15: UEFI firmware waited for its boot-menu timeout."""
    argv = list(argv)
    n = len(q.UEFI_NO_WAIT)
    for i in range(len(argv) - n + 1):
        if argv[i:i + n] == q.UEFI_NO_WAIT:
            del argv[i:i + n]
            break
    return argv


# The settings before issue 15: the generic Debian kernel (XZ bzImage) instead of the cloud one (LZ4), "quiet"
# on the kernel command line, and the QEMU argv rewrite. "now" is plain prepare_assets.sh + mkdisk.sh + build_command.
BEFORE = {"env": {"KILN_STANDIN_KERNEL": "generic"}, "assets": "boot-assets-generic", "mkdisk": ["--append", "quiet"],
          "argv": _before_argv}
CACHE = os.environ.get("KILN_TEST_CACHE", "/var/cache/kiln-test")


class BootFailed(Exception):
    pass


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


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


WARM = {}  # arch -> warm variable store (made once per run, outside the timed boots)


def warm_store(work, arch, qemu, code, template):
    if arch not in WARM:
        path, note = q.warm_efi_vars(Runner, qemu, arch, code, template, os.path.join(work, "efi-vars"))
        if not path:
            raise BootFailed("%s: no warm UEFI variable store: %s" % (arch, note))
        WARM[arch] = path
        print("%s UEFI: %s" % (arch, note))
    return WARM[arch]


def boot_once(work, image, board, firmware, accel, args, before=False):
    """One boot: (marker_s, qemu_s, cpu_s, phases)."""
    arch = q.ARCHES[board]
    qemu = shutil.which(q.QEMU_BINARIES[arch])
    tmp = tempfile.mkdtemp(prefix="kiln-bench-boot-", dir=work)
    try:
        overlay = os.path.join(tmp, "disk.qcow2")
        q.make_overlay(image, "raw", overlay, Runner, shutil.which("qemu-img"))
        code = vars_copy = None
        if firmware == "uefi":
            code, vars_tmpl = q.host_firmware(arch, "uefi")
            if vars_tmpl and not before:  # boot_check's default (efi_vars_warm): the firmware's warm variable store
                vars_tmpl = warm_store(work, arch, qemu, code, vars_tmpl)
            if vars_tmpl:
                vars_copy = os.path.join(tmp, "vars.fd")
                shutil.copyfile(vars_tmpl, vars_copy)
        console = os.path.join(tmp, "console.log")
        argv = q.build_command(qemu, arch, accel, q.new_tag("bench"), console, overlay, firmware=firmware,
                               bios=q.host_firmware(arch, "bios")[0] if firmware == "bios" else None, efi_code=code,
                               efi_vars=vars_copy, memory=args.memory, cpus=args.cpus)
        if before:
            argv = BEFORE["argv"](argv)
        cpu0 = children_cpu()  # the supervisor reaps QEMU, and this process reaps the supervisor
        res = q.supervise(Runner, argv, console, os.path.join(tmp, "qemu.log"), q.DEFAULT_SUCCESS_MARKERS,
                          q.DEFAULT_FAILURE_MARKERS, args.kvm_timeout if accel == "kvm" else args.timeout)
        cpu = children_cpu() - cpu0
        if res["verdict"] != "passed":
            tail = " | ".join(res.get("console_tail", [])[-3:])
            raise BootFailed("%s %s %s did not boot: %s | %s" % (board, firmware, accel, res["reason"], tail))
        return res["boot_time_s"], res["elapsed_s"], cpu, res["phases"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_disks(work, modes, args):
    arches = sorted(set(MODES[m][0].split("-")[0] for m in modes))
    variants = {"now": (args.assets or os.path.join(CACHE, "boot-assets"), {}, [])}
    if args.before:
        variants["before"] = (os.path.join(CACHE, BEFORE["assets"]), BEFORE["env"], BEFORE["mkdisk"])
    images = {}
    for variant, (assets, env, extra) in sorted(variants.items()):
        for arch in arches:
            subprocess.run([os.path.join(DISK, "prepare_assets.sh"), "--arch", arch, "--dest", assets], check=True,
                           stdout=subprocess.DEVNULL, env=dict(os.environ, **env))
        for board in sorted(set(MODES[m][0] for m in modes)):
            images[(board, variant)] = os.path.join(work, "%s-%s.bin" % (board, variant))
            subprocess.run([os.path.join(DISK, "mkdisk.sh"), "--board", board, "--version", "4593.2.5", "--assets", assets,
                            "--out", images[(board, variant)]] + extra, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return images


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    """Medians of a list of boot_once results."""
    out = {"marker_s": med(r[0] for r in runs), "qemu_s": med(r[1] for r in runs), "cpu_s": med(r[2] for r in runs),
           "lo": min(r[0] for r in runs), "hi": max(r[0] for r in runs)}
    for p in PHASES:
        out[p] = med(r[3].get(p) for r in runs)
    return out


def measure(work, images, modes, args, probe_cache):
    rows = []
    for mode in modes:
        board, firmware = MODES[mode]
        arch = q.ARCHES[board]
        kvm = q.kvm_probe(Runner, arch, shutil.which(q.QEMU_BINARIES[arch]), probe_cache)
        accels = (["kvm"] if kvm["usable"] else []) + ["tcg"]
        variants = ["now"] + (["before"] if (board, "before") in images else [])
        results = {}
        for accel in list(accels):
            runs = {v: [] for v in variants}
            try:
                for _i in range(args.runs):  # interleaved, so load changes hit both variants alike
                    for v in variants:
                        runs[v].append(boot_once(work, images[(board, v)], board, firmware, accel, args,
                                                 before=v == "before"))
            except BootFailed as exc:
                if accel == "tcg":
                    raise SystemExit(str(exc))
                # a KVM that passes the probe but cannot boot the image (seen on PVM hosts): report, go on with TCG
                accels.remove(accel)
                kvm = dict(kvm, usable=False, reason="the probe passed but a boot failed: %s" % exc)
                continue
            for v in variants:
                results[(accel, v)] = summarize(runs[v])
        rows.append((mode, accels, variants, results, kvm))
    return rows


def fmt(value, width=6):
    return ("%*.2f" % (width, value)) if value is not None else "%*s" % (width, "-")


def report(rows, args):
    load = os.getloadavg()
    print("boot to success marker, median of %d run(s), %d MiB, %d vCPU, host %s with %d cores, load %.1f/%.1f/%.1f"
          % (args.runs, args.memory, args.cpus, q.host_arch(), q.cpu_count(), load[0], load[1], load[2]))
    print("%-11s %-5s %-6s %8s %8s %8s %13s %7s" % ("mode", "accel", "disk", "marker_s", "qemu_s", "cpu_s", "range_s",
                                                    "tcg/kvm"))
    for mode, accels, variants, res, kvm in rows:
        for accel in accels:
            for v in variants:
                r = res[(accel, v)]
                ratio = ""
                if accel == "tcg" and ("kvm", v) in res:
                    ratio = "%.1fx" % (r["marker_s"] / res[("kvm", v)]["marker_s"])
                cells = (mode, accel, v, r["marker_s"], r["qemu_s"], r["cpu_s"], r["lo"], r["hi"], ratio)
                print("%-11s %-5s %-6s %8.2f %8.2f %8.2f %6.2f-%-6.2f %7s" % cells)
        if "kvm" not in accels:
            print("%-11s %-5s n/a: %s" % (mode, "kvm", kvm["reason"]))
    print("\nwhere the time goes (median seconds per phase; '-' = boundary not on the console, time counted in the next phase)")
    print("%-11s %-5s %-6s " % ("mode", "accel", "disk") + " ".join("%6s" % SHORT[p] for p in PHASES) + "   total")
    for mode, accels, variants, res, _kvm in rows:
        for accel in accels:
            for v in variants:
                r = res[(accel, v)]
                print("%-11s %-5s %-6s " % (mode, accel, v) + " ".join(fmt(r[p]) for p in PHASES) + "  " + fmt(r["marker_s"]))
            if "before" in variants:
                now, old = res[(accel, "now")], res[(accel, "before")]
                cells = [("%5.2fx" % (now[p] / old[p])) if (now[p] is not None and old[p]) else "%6s" % "-" for p in PHASES]
                print("%-11s %-5s %-6s " % (mode, accel, "ratio") + " ".join(cells) + "  %5.2fx  (now/before; cpu %.2fx)"
                      % (now["marker_s"] / old["marker_s"], now["cpu_s"] / old["cpu_s"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--memory", type=int, default=384)
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--kvm-timeout", type=float, default=60, help="KVM boots take seconds; a hung one is reported")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--no-before", dest="before", action="store_false", help="do not boot the pre-issue-15 settings")
    ap.add_argument("--assets", default=None, help="boot assets of 'now' (default: prepare_assets.sh's default)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: system temp)")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            raise SystemExit("unknown mode %s: use %s" % (m, ", ".join(MODES)))
    work = tempfile.mkdtemp(prefix="kiln-bench-boot-", dir=args.dir)
    try:
        images = build_disks(work, modes, args)
        rows = measure(work, images, modes, args, os.path.join(work, "cache"))
        report(rows, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
