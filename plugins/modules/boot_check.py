#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: boot_check
short_description: Boot a Flatcar image under QEMU and check that it reaches its goal
version_added: 0.1.0
description:
  - Boots a Flatcar image under QEMU the way kola does (C(flatcar/mantle platform/qemu.go)) and watches the serial
    console for success markers (by default a real Flatcar console's C(Reached target ... Multi-User System) or the
    C(login:) prompt) and failure markers (C(Kernel panic), C(Ignition failed), C(emergency mode), firmware that found
    nothing to boot), with a timeout.
  - Takes the generic C(flatcar_production_image.bin), C(flatcar_production_image.bin.bz2) (decompressed, sparse, into a
    private temp dir), or the C(qemu_uefi) vendor image with its C(_efi_code)/C(_efi_vars) files. The image itself
    is never written to; the guest runs on a qcow2 overlay, and UEFI variables go to a private copy.
  - amd64 boots with C(-machine q35) under SeaBIOS (O(firmware=bios)) or OVMF (O(firmware=uefi)); arm64 boots with
    C(qemu-system-aarch64 -machine virt) under AAVMF (UEFI only, like Flatcar's own tests).
  - Uses KVM when it really works on the host, else TCG emulation. Whether KVM works is found by booting a tiny guest
    with C(-accel kvm -cpu host) once per host boot and QEMU binary (an openable C(/dev/kvm) is not enough, since on PVM hosts it
    cannot run a guest); the answer is cached in O(cache_dir). arm64 on amd64 is always emulated. Timeouts grow under
    emulation (O(tcg_timeout_factor)).
  - Passes Ignition with C(-fw_cfg name=opt/org.flatcar-linux/config,file=...). The guest gets no network at all unless
    O(ssh) is set; then only user-mode networking with C(restrict=on) and a port forwarded from C(127.0.0.1) to guest
    port 22.
  - QEMU runs under a small supervisor that kills it on success, failure, timeout or interruption (QEMU is started with
    C(PR_SET_PDEATHSIG), so it also dies when Ansible kills the module). Temp files are always removed.
  - Several checks on one host share it through slots sized from free memory (never overcommitted) and cores (two
    vCPUs per core, since a booting guest keeps about one vCPU busy); O(max_parallel) caps them.
  - With O(record_path) or O(scripts_dir) + O(board) the verdict is recorded as stage C(boot_check:<firmware>) of the
    build record, with the image's sha256 in the input digest; a check that passed with the same inputs is skipped
    unless O(force=true).
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
  - kiln.flatcar._common.board
  - kiln.flatcar._common.record
attributes:
  check_mode:
    support: full
    details: Reports the QEMU command, acceleration and timeout that would be used; boots nothing (also no KVM probe).
  diff_mode:
    support: none
  idempotent:
    support: full
    details: With a build record, a passed check with the same inputs is skipped. Without one every run boots.
options:
  image:
    description:
      - The image to boot. When omitted, the generic image recorded by the C(image) stage of the build record is used.
      - The C(qemu_uefi) vendor image (C(flatcar_production_qemu_uefi_image.img)) brings its own firmware files, found
        next to it.
    type: path
  firmware:
    description: Firmware to boot with. V(bios) is amd64 only.
    type: str
    choices: [bios, uefi]
    default: uefi
  efi_code:
    description: UEFI code file (raw C(.fd) or C(.qcow2)); default the image's C(_efi_code) file or the host's OVMF/AAVMF.
    type: path
  efi_vars:
    description: UEFI variables template (copied, never written); default the image's C(_efi_vars) file or the host's.
    type: path
  efi_vars_warm:
    description:
      - With the host's UEFI firmware (no O(efi_vars) given and no C(_efi_vars) next to the image), start from the
        firmware's variable store as it is after its first power-on instead of the blank template, made once per
        host and firmware (about 5 s under emulation) by booting the firmware with no disk and no network up to its
        boot manager, and kept in O(cache_dir)C(/efi-vars). It holds only the firmware's own entries (shell, setup),
        nothing of any disk, and saves about 1 s of every boot under emulation. The verdicts are the same.
      - V(false) copies the blank template for every boot. A warm store that cannot be made is reported in
        RV(efi_vars) and the blank template is used.
    type: bool
    default: true
    version_added: 0.3.0
  ignition:
    description:
      - Ignition config for the first boot, a path to a JSON file (passed unchanged) or the config as a dict.
    type: raw
  success_markers:
    description: Python regular expressions; the boot passes when O(success_match) of them appeared on the console.
    type: list
    elements: str
  success_match:
    description: Whether V(any) success marker suffices or V(all) must appear.
    type: str
    choices: [any, all]
    default: any
  failure_markers:
    description: Python regular expressions that fail the boot at once when they appear on the console.
    type: list
    elements: str
  extra_failure_markers:
    description: Added to O(failure_markers) (or to the defaults).
    type: list
    elements: str
    default: []
  timeout:
    description:
      - Seconds to wait for the success markers with KVM, from 1 to 86400. Under emulation this is multiplied by
        O(tcg_timeout_factor), and by 1.5 more when emulating another architecture (arm64 on amd64).
    type: int
    default: 180
  tcg_timeout_factor:
    description: Multiplier for O(timeout) under TCG emulation, above 0 and at most 20.
    type: float
    default: 3.0
  accel:
    description: V(auto) uses KVM when the probe says it works. V(tcg) forces emulation; V(kvm) fails when KVM does not work.
    type: str
    choices: [auto, kvm, tcg]
    default: auto
  memory:
    description: Guest memory in MiB (128 to 1048576).
    type: int
    default: 2048
  cpus:
    description: Guest vCPUs (1 to 256).
    type: int
    default: 2
  ssh:
    description:
      - Also log in over SSH after the success markers (user-mode network, C(restrict=on), port forward on 127.0.0.1 only)
        and read C(/etc/os-release).
      - Without O(ssh.private_key) an ephemeral key is made; with O(ssh.inject_key) its public key is added to the Ignition
        config for O(ssh.user).
    type: dict
    suboptions:
      user:
        description: Login user.
        type: str
        default: core
      private_key:
        description: Private key file for the login (its public key is derived with C(ssh-keygen -y)).
        type: path
      inject_key:
        description: Add the public key to the Ignition config (C(passwd.users[].sshAuthorizedKeys)).
        type: bool
        default: true
      expect_version:
        description: Fail unless C(VERSION) in the guest's C(/etc/os-release) equals this.
        type: str
      command:
        description: Command run in the guest; its output must contain C(VERSION=) when O(ssh.expect_version) is set.
        type: str
        default: cat /etc/os-release
  no_reboot:
    description: Pass C(-no-reboot), so a guest that reboots or panics ends the check at once.
    type: bool
    default: true
  extra_args:
    description:
      - More QEMU arguments, as option and value pairs from an allow-list; anything else (networking, serial ports,
        monitors and QMP, C(-gdb)/C(-s), displays and VNC, character devices, files, daemon options) is refused with one
        line.
      - C(-cpu <model>[,+feature|,-feature|,prop=value...]), C(-smp <n>[,sockets=|cores=|threads=|dies=|clusters=|maxcpus=<n>]),
        C(-m <size>) (C(2048), C(4G)), C(-machine|-M <type>[,<property>=<value>]) with the properties C(graphics),
        C(gic-version), C(smm), C(kernel-irqchip), C(acpi), C(hpet), C(usb), C(vmport), C(highmem), C(its), C(mem-merge),
        C(dump-guest-core),
        C(-accel kvm|tcg[,thread=single|multi][,tb-size=<n>][,kernel-irqchip=on|off|split]),
        C(-device virtio-rng-pci|virtio-rng-device|virtio-balloon-pci|virtio-balloon-device|pvpanic|pvpanic-pci|i6300esb[,id=<name>]),
        C(-rtc base=utc|localtime|<date>[,clock=host|rt|vm][,driftfix=none|slew]).
    type: list
    elements: str
    default: []
  console_log:
    description:
      - Where to keep the serial console log. Default the build record's C(logs/) dir, else O(cache_dir)C(/logs).
      - Its directory (and O(work_dir)) must be writable with free space; a read-only or full one fails with one line
        before QEMU starts.
    type: path
  cache_dir:
    description: Per-host kiln state (KVM probe answer, slot locks, logs).
    type: path
    default: ~/.cache/kiln
  work_dir:
    description: Where the private temp dir (overlay, decompressed image, UEFI vars copy) is made. Needs room for a
      decompressed image when O(image) is C(.bz2).
    type: path
  max_parallel:
    description: Most checks running at once on this host (0 to 256); V(0) sizes it from free memory and cores (see above).
    type: int
    default: 0
  slot_wait:
    description: Seconds to wait for a free slot before failing (0 to 604800).
    type: int
    default: 3600
  lock_wait:
    description:
      - Seconds to wait while another kiln task holds the build record (for example the check of the other firmware,
        which holds it for its whole boot) before failing (0 to 604800).
    type: int
    default: 1800
  probe_only:
    description: Only probe (and cache) whether KVM works on this host for O(board); boot nothing else.
    type: bool
    default: false
  refresh_probe:
    description: Probe KVM again even when a cached answer exists.
    type: bool
    default: false
  record_path:
    description:
      - Build record to update (stage C(boot_check:<firmware>)); pass on the C(record_path) an earlier kiln module
        returned.
    type: path
  scripts_dir:
    description: Scripts checkout; with O(board) locates the build record of the pinned version.
    type: path
  force:
    description: Boot even when the build record says this check passed with the same inputs.
    type: bool
    default: false
notes:
  - Markers are matched on the console text with ANSI escape sequences and carriage returns removed.
  - Real Flatcar under emulation takes minutes; the default timeout (180s with KVM) becomes 540s under TCG and 810s for
    arm64 on amd64.
seealso:
  - module: kiln.flatcar.kola
"""

EXAMPLES = r"""
- name: Boot-check the built image under UEFI and record the verdict
  kiln.flatcar.boot_check:
    scripts_dir: /var/lib/kiln/scripts
    board: amd64-usr
    firmware: uefi

- name: Boot a downloaded image with Ignition and check the version over SSH
  kiln.flatcar.boot_check:
    image: /srv/images/flatcar_production_image.bin.bz2
    board: amd64-usr
    firmware: bios
    ignition:
      ignition: {version: 3.4.0}
      storage:
        files:
          - path: /etc/hostname
            contents: {source: "data:,kiln-check"}
    ssh:
      expect_version: 4593.2.5

- name: Does KVM work here?
  kiln.flatcar.boot_check:
    board: amd64-usr
    probe_only: true
"""

RETURN = r"""
changed:
  description: Whether a boot ran (and the record was updated); false when the recorded check is current.
  returned: always
  type: bool
verdict:
  description: V(passed), V(failed), V(timeout), V(interrupted), V(error), V(skipped) (record current) or V(would_run) (check mode).
  returned: always
  type: str
reason:
  description: One line explaining the verdict.
  returned: always
  type: str
boot_time_s:
  description: Seconds from QEMU start to the success markers.
  returned: when the markers appeared
  type: float
phases:
  description:
    - Where the boot time went, from the first console line of each phase (lines a real Flatcar prints too) -
      C(firmware_s), C(bootloader_s), C(kernel_s), C(initramfs_s), C(ignition_s), C(userspace_s).
    - A phase whose boundary never appeared is null and its time counts in the next phase seen.
  returned: when a boot ran or was recorded
  type: dict
  sample: {"firmware_s": 1.31, "bootloader_s": 1.68, "kernel_s": 2.04, "initramfs_s": 1.31, "ignition_s": 0.0, "userspace_s": 0.5}
elapsed_s:
  description: Seconds QEMU ran.
  returned: when a boot ran
  type: float
matched_markers:
  description: Success markers seen, with the console line and the time they appeared.
  returned: when a boot ran
  type: list
  elements: dict
  contains:
    marker:
      description: The marker regex.
      type: str
    line:
      description: The console line it matched.
      type: str
    at_s:
      description: Seconds after QEMU start.
      type: float
failure_marker:
  description: The failure marker that ended the boot.
  returned: when a failure marker matched
  type: dict
console_log:
  description: Path of the serial console log (kept after the check).
  returned: when a boot ran
  type: str
log_tail:
  description: Last console lines.
  returned: when a boot ran
  type: list
  elements: str
accel:
  description: V(kvm) or V(tcg).
  returned: always
  type: str
kvm:
  description: The KVM probe's answer (usable, reason, cached, cache_path).
  returned: always
  type: dict
timeout_s:
  description: The effective timeout after scaling for emulation.
  returned: unless probe_only
  type: float
qemu_cmd:
  description: The QEMU argv (contains the unique C(-name kiln-boot-...) tag).
  returned: unless probe_only
  type: list
  elements: str
qemu_name:
  description: The unique tag passed as C(-name); find a QEMU of this check with C(pgrep -f <tag>).
  returned: unless probe_only
  type: str
image:
  description: The image booted and its sha256.
  returned: unless probe_only
  type: dict
ssh:
  description: SSH check result (ok, version, attempts, error, port).
  returned: when ssh was asked for and the markers appeared
  type: dict
efi_vars:
  description:
    - Where the UEFI variable store of the boot came from - C(source) is V(given) (O(efi_vars)), V(image) (the
      image's C(_efi_vars)), V(host) (the host firmware's blank template) or V(host-warm) (see O(efi_vars_warm));
      C(template) is the file copied for the boot; C(note) says why a warm store was not used.
  returned: when a UEFI boot ran
  type: dict
  sample: {"source": "host-warm", "template": "/root/.cache/kiln/efi-vars/amd64-0f3a...-v1.fd", "note": null}
slot:
  description: The parallel slot used (index, capacity, waited_s).
  returned: when a boot ran
  type: dict
stage:
  description: Build record stage name.
  returned: when a record is used
  type: str
record_path:
  description: Path of the build record.
  returned: when a record is used
  type: str
"""

import json
import os
import shutil
import signal
import tempfile

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _qemu as q
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import board_args, record_args
from ansible_collections.kiln.flatcar.plugins.module_utils._record import digest
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import Runner, tail_lines
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import LocateError, Stage, guarded, locate, one_line

CROSS_ARCH_FACTOR = 1.5


class _Interrupted(BaseException):
    """SIGTERM/SIGINT/SIGHUP: a BaseException so AnsibleModule.run_command does not swallow it."""


def _on_signal(signum, _frame):
    raise _Interrupted("signal %d" % signum)


class Check:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.cache_dir = os.path.abspath(self.p["cache_dir"])
        self.tmp = None
        self.slot = None
        self.stage = None
        self.vars_source = None  # where the UEFI variables come from: given, image, host (see firmware())
        self.efi_vars = None     # the efi_vars result of a UEFI boot (warm_vars())
        self.stage_name = "boot_check:%s" % self.p["firmware"]
        self.runner = Runner(module, log_path=None)

    # -- helpers ------------------------------------------------------------------------------
    def fail(self, msg, **extra):
        """One line; while the stage holds the build record it is recorded as failed too (the stage engine)."""
        self.cleanup()
        self.module.fail_json(msg=one_line(msg, 600), **extra)

    def cleanup(self):
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    @property
    def record_path(self):
        return self.stage.location.record_path if self.stage else None

    def image_from_record(self):
        entry = self.stage.require("image", "build the image first or pass image")
        outs = [o for o in entry.get("outputs", []) if o.get("role") == "generic_image"]
        outs.sort(key=lambda o: (not o["path"].endswith(".bin"), o["path"]))
        if not outs:
            self.fail("the image stage in %s recorded no generic image (flatcar_production_image.bin[.bz2]): pass image"
                      % self.record_path, record_path=self.record_path)
        return os.path.join(self.stage.location.build_root, outs[0]["path"]), outs[0].get("sha256")

    # -- ignition and ssh ---------------------------------------------------------------------
    def ignition_source(self):
        ign = self.p["ignition"]
        if ign is None or ign == "":
            return None, None
        if isinstance(ign, dict):
            return None, ign
        if isinstance(ign, str):
            path = os.path.abspath(ign)
            if not os.path.isfile(path):
                self.fail("ignition file %s does not exist" % path)
            return path, None
        self.fail("ignition must be a path or a dict, not %s" % type(ign).__name__)
        return None, None

    def ssh_setup(self, ign_path, ign_dict):
        """Return (ssh_args_for_supervisor, ignition_path_or_dict) with the key injected when asked."""
        s = self.p["ssh"]
        key = s.get("private_key")
        if key:
            key = os.path.abspath(key)
            if not os.path.isfile(key):
                self.fail("ssh.private_key %s does not exist" % key)
        else:
            keygen = self.module.get_bin_path("ssh-keygen")
            if not keygen:
                self.fail("ssh-keygen not found: install openssh-client or pass ssh.private_key")
            key = os.path.join(self.tmp, "id_ed25519")
            rc, _out, err = self.runner.capture([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "kiln-boot-check", "-f", key])
            if rc != 0:
                self.fail("ssh-keygen failed: %s" % err)
        ssh_bin = self.module.get_bin_path("ssh")
        if not ssh_bin:
            self.fail("ssh not found: install openssh-client for the SSH check")
        if s.get("inject_key", True):
            keygen = self.module.get_bin_path("ssh-keygen", required=True)
            rc, pub, err = self.runner.capture([keygen, "-y", "-f", key])
            if rc != 0:
                self.fail("cannot derive the public key of %s: %s" % (key, (err or "").strip()))
            if ign_path:
                try:
                    with open(ign_path, "r", encoding="utf-8") as fh:
                        ign_dict = json.load(fh)
                except (OSError, ValueError) as exc:
                    self.fail("cannot add the SSH key to Ignition config %s (%s): fix the file or set ssh.inject_key=false"
                              % (ign_path, exc))
                ign_path = None
            ign_dict = q.with_ssh_key(ign_dict, s["user"], pub)
        args = {"ssh": ssh_bin, "key": key, "user": s["user"], "expect_version": s.get("expect_version"),
                "command": s.get("command") or "cat /etc/os-release"}
        return args, ign_path, ign_dict

    # -- main ---------------------------------------------------------------------------------
    def validate(self):
        """Numbers in range, extra QEMU arguments from the allow-list, markers that compile: before anything runs."""
        try:
            q.check_options(self.p)
        except q.QemuError as exc:
            self.fail(str(exc))

    def machine(self):
        """(arch, qemu, kvm, accel, timeout_s); with probe_only the module exits here."""
        p = self.p
        module = self.module
        self.validate()
        if not p["board"]:
            self.fail("board is required")
        arch = q.ARCHES[p["board"]]
        if p["firmware"] == "bios" and arch == "arm64":
            self.fail("firmware bios is not valid for arm64-usr: arm64 Flatcar boots with UEFI only (use firmware: uefi)")
        qemu = module.get_bin_path(q.QEMU_BINARIES[arch])
        if not qemu:
            self.fail("%s not found: install QEMU (the kiln.flatcar.tester role does)" % q.QEMU_BINARIES[arch])
        if p["memory"] < 128 or p["cpus"] < 1:
            self.fail("memory must be at least 128 MiB and cpus at least 1")
        kvm = {"usable": False, "reason": "accel=tcg requested", "cached": False, "cache_path": None}
        if p["accel"] != "tcg" or p["probe_only"]:
            kvm = q.kvm_probe(self.runner, arch, qemu, self.cache_dir, refresh=p["refresh_probe"],
                              read_only=module.check_mode)
        if p["probe_only"]:
            module.exit_json(changed=False, verdict="probed", reason=kvm["reason"], kvm=kvm,
                             accel="kvm" if kvm["usable"] else "tcg")
        if p["accel"] == "kvm" and kvm["usable"] is False:
            self.fail("accel=kvm but KVM cannot run a guest here: %s" % kvm["reason"], kvm=kvm)
        accel = "kvm" if (p["accel"] != "tcg" and kvm["usable"]) else "tcg"
        factor = 1.0
        if accel == "tcg":
            factor = p["tcg_timeout_factor"]
            if arch != q.host_arch():
                factor *= CROSS_ARCH_FACTOR
        return arch, qemu, kvm, accel, round(p["timeout"] * factor, 1)

    def image(self):
        """(absolute image path, sha256): the given image, or the generic image the image stage recorded."""
        image, recorded_sha = self.p["image"], None
        if not image and self.stage.record is not None:
            image, recorded_sha = self.image_from_record()
        if not image:
            self.fail("image is required unless a build record (record_path or scripts_dir) names it")
        image = os.path.abspath(image)
        if not os.path.isfile(image):
            self.fail("image %s does not exist" % image, record_path=self.record_path)
        image_sha = q.file_sha256(image)
        if recorded_sha and recorded_sha != image_sha:
            self.fail("image %s changed since the image stage recorded it (sha256 differs): rebuild it" % image,
                      record_path=self.record_path)
        return image, image_sha

    def firmware(self, arch, image):
        """(efi_code, efi_vars, bios); where the variables come from in self.vars_source."""
        p = self.p
        try:
            efi_code, efi_vars, bios, self.vars_source = q.pick_firmware(arch, p["firmware"], image, p["efi_code"],
                                                                         p["efi_vars"])
        except q.QemuError as exc:
            self.fail(str(exc))
        return efi_code, efi_vars, bios

    def run(self):
        p = self.p
        arch, qemu, kvm, accel, timeout_s = self.machine()
        try:
            location = locate(p["record_path"], p["scripts_dir"], p["board"], build_root=p["build_root"])
        except LocateError as exc:
            self.fail(str(exc))
        if location.record_path and not os.path.isfile(location.record_path):
            self.fail("no build record at %s: build the image first (or leave out record_path/scripts_dir)"
                      % location.record_path, record_path=location.record_path)
        with Stage(self.module, self.stage_name, location, wait=p["lock_wait"]) as self.stage:
            self.checked(arch, qemu, kvm, accel, timeout_s)

    def checked(self, arch, qemu, kvm, accel, timeout_s):
        """The stage body: skip when current, report in check mode, else boot and record the verdict."""
        p = self.p
        module = self.module
        image, image_sha = self.image()
        efi_code, efi_vars, bios = self.firmware(arch, image)
        ign_path, ign_dict = self.ignition_source()
        try:
            success, failure = q.check_markers(p["success_markers"], p["failure_markers"], p["extra_failure_markers"])
        except q.QemuError as exc:
            self.fail(str(exc))
        ign_digest = None
        if ign_path:
            ign_digest = "sha256:" + q.file_sha256(ign_path)
        elif ign_dict is not None:
            ign_digest = digest(ign_dict)
        inputs = {
            "stage": self.stage_name,
            "board": p["board"],
            "firmware": p["firmware"],
            "image": {"path": image, "sha256": image_sha},
            "efi_code": os.path.basename(efi_code) if efi_code else None,
            "ignition": ign_digest,
            "success_markers": success,
            "success_match": p["success_match"],
            "failure_markers": failure,
            "ssh": {"user": p["ssh"]["user"], "expect_version": p["ssh"].get("expect_version")} if p["ssh"] else None,
        }
        if self.stage.record is not None:
            inputs["previous_stage"] = {"name": "image", "result_digest": self.stage.result_digest("image")}
        # the image path is left out: a build tree copied elsewhere stays current
        current, why = self.stage.is_current(inputs, input_digest=digest(dict(inputs, image={"sha256": image_sha})))
        record_ret = dict(record_path=self.record_path, stage=self.stage_name) if self.record_path else {}
        if current:
            d = self.stage.entry().get("details", {})
            module.exit_json(changed=False, verdict="skipped", reason="boot check %s (%s)" % (self.stage_name, why),
                             boot_time_s=d.get("boot_time_s"), phases=d.get("phases"), console_log=d.get("console_log"),
                             matched_markers=d.get("matched_markers", []), accel=d.get("accel", accel), kvm=kvm,
                             image={"path": image, "sha256": image_sha}, **record_ret)
        tag = q.new_tag("boot")
        log_dir = os.path.join(self.stage.location.state_dir, "logs") if self.record_path else None
        console_log = os.path.abspath(p["console_log"] or os.path.join(
            log_dir or os.path.join(self.cache_dir, "logs"),
            "%s.console.log" % (self.stage_name.replace(":", "_") if log_dir else tag)))
        # command preview (paths in the temp dir are placeholders until it exists)
        tmp_hint = os.path.join(p["work_dir"] or tempfile.gettempdir(), "kiln-boot-XXXXXX")
        ssh_port = q.free_port() if p["ssh"] else None
        boot = dict(qemu=qemu, arch=arch, accel=accel, tag=tag, console_log=console_log, image=image, efi_code=efi_code,
                    efi_vars=efi_vars, bios=bios, ignition=ign_path or ign_dict, ssh_port=ssh_port)
        preview = self.command(tmp=tmp_hint, prepared=False, **boot)
        if module.check_mode:
            module.exit_json(changed=True, verdict="would_run", reason="would boot %s with %s %s (%s, timeout %ss)"
                             % (os.path.basename(image), p["firmware"], arch, accel, timeout_s),
                             accel=accel, kvm=kvm, timeout_s=timeout_s, qemu_cmd=preview, qemu_name=tag,
                             console_log=console_log, image={"path": image, "sha256": image_sha},
                             record_path=self.record_path, stage=self.stage_name if self.record_path else None)
        try:
            q.writable_dir(os.path.dirname(console_log), "serial console log")
            if p["work_dir"]:
                q.writable_dir(p["work_dir"], "boot work files")
        except q.QemuError as exc:
            self.fail(str(exc), console_log=console_log)
        self.stage.begin(log_path=console_log)
        result, argv, kvm, accel, timeout_s, slot = self.boot(boot, kvm, timeout_s, success, failure, ign_path, ign_dict)
        self.verdict(result, argv, kvm, accel, timeout_s, slot, boot, image_sha, record_ret)

    def boot(self, boot, kvm, timeout_s, success, failure, ign_path, ign_dict):
        """Boot under a slot; KVM that fails at run time falls back to TCG once."""
        p = self.p
        try:
            os.makedirs(os.path.dirname(boot["console_log"]), exist_ok=True)
            try:
                self.slot = q.acquire_slot(os.path.join(self.cache_dir, "slots"), p["memory"], p["cpus"],
                                           p["max_parallel"], p["slot_wait"])
            except q.QemuError as exc:
                self.fail(str(exc))
            base_tmp = p["work_dir"] or None
            if base_tmp:
                os.makedirs(base_tmp, exist_ok=True)
            self.tmp = tempfile.mkdtemp(prefix="kiln-boot-", dir=base_tmp)
            self.warm_vars(boot)
            ssh_args = None
            if p["ssh"]:
                ssh_args, ign_path, ign_dict = self.ssh_setup(ign_path, ign_dict)
                ssh_args["port"] = boot["ssh_port"]
                boot["ignition"] = ign_path or ign_dict
            argv = self.command(tmp=self.tmp, prepared=True, **boot)
            qlog = os.path.join(self.tmp, "qemu.log")
            result = q.supervise(self.runner, argv, boot["console_log"], qlog, success, failure, timeout_s,
                                 p["success_match"], ssh_args)
            if boot["accel"] == "kvm" and result["verdict"] != "passed" and q.kvm_failed_at_runtime(result):
                # KVM passed the probe but cannot run this guest: remember that, and emulate.
                q.save_probe(kvm["cache_path"], q.probe_cache_key(boot["qemu"]), False,
                             "KVM failed at run time: %s" % one_line((result.get("qemu_log_tail") or [""])[-1], 600))
                kvm = dict(kvm, usable=False, reason="KVM failed at run time; fell back to TCG")
                boot["accel"] = "tcg"
                timeout_s = round(p["timeout"] * p["tcg_timeout_factor"], 1)
                argv = self.command(tmp=self.tmp, prepared=True, reuse=True, **boot)
                result = q.supervise(self.runner, argv, boot["console_log"], qlog, success, failure, timeout_s,
                                     p["success_match"], ssh_args)
        except _Interrupted as exc:
            self.fail("boot check interrupted (%s); QEMU was killed" % exc, qemu_name=boot["tag"])
        finally:
            slot = self.slot.as_dict() if self.slot else None
            self.cleanup()
        return result, argv, kvm, boot["accel"], timeout_s, slot

    def warm_vars(self, boot):
        """Boot from the host firmware's warm variable store (efi_vars_warm) when the blank host template is used."""
        if self.p["firmware"] == "uefi" and boot["efi_vars"]:
            boot["efi_vars"], self.efi_vars = q.boot_efi_vars(
                self.runner, boot["qemu"], boot["arch"], boot["efi_code"], boot["efi_vars"], self.vars_source,
                self.p["efi_vars_warm"], os.path.join(self.cache_dir, "efi-vars"))

    def verdict(self, result, argv, kvm, accel, timeout_s, slot, boot, image_sha, record_ret):
        """Record the verdict (the lock is released) and return it: passed exits, anything else fails."""
        p = self.p
        console_log, image = boot["console_log"], boot["image"]
        tail = list(result.get("console_tail") or tail_lines(console_log, 30))
        details = {
            "verdict": result["verdict"],
            "reason": result.get("reason"),
            "boot_time_s": result.get("boot_time_s"),
            "phases": result.get("phases"),
            "elapsed_s": result.get("elapsed_s"),
            "matched_markers": result.get("matched", []),
            "failure_marker": result.get("failure_marker"),
            "console_log": console_log,
            "accel": accel,
            "timeout_s": timeout_s,
            "image_sha256": image_sha,
            "ssh": _public_ssh(result.get("ssh")),
            "qemu_name": boot["tag"],
            "efi_vars": self.efi_vars,
        }
        ret = dict(verdict=result["verdict"], reason=one_line(result.get("reason") or "", 600),
                   boot_time_s=result.get("boot_time_s"), phases=result.get("phases"), elapsed_s=result.get("elapsed_s"),
                   matched_markers=result.get("matched", []), failure_marker=result.get("failure_marker"),
                   console_log=console_log, accel=accel, kvm=kvm, timeout_s=timeout_s, qemu_cmd=argv,
                   qemu_name=boot["tag"], image={"path": image, "sha256": image_sha}, slot=slot, **record_ret)
        if self.efi_vars:
            ret["efi_vars"] = self.efi_vars
        if result.get("ssh") is not None:
            ret["ssh"] = _public_ssh(result["ssh"])
        if result["verdict"] == "passed":
            self.stage.finish([], details)
            self.module.exit_json(changed=True, log_tail=tail, **ret)
        msg, qlog = q.verdict_message(result, image, p["board"], p["firmware"], accel, tail)
        self.stage.fail(msg, details=details, rc=result.get("qemu_rc"), cmd=argv, log_path=console_log,
                        log_tail=tail, qemu_log_tail=qlog, **ret)

    def command(self, qemu, arch, accel, tag, console_log, tmp, image, efi_code, efi_vars, bios, ignition, ssh_port,
                prepared, reuse=False):
        """Prepare the files in ``tmp`` (when ``prepared``) and return the QEMU argv."""
        p = self.p
        runner = self.runner
        qemu_img = self.module.get_bin_path("qemu-img")
        overlay = os.path.join(tmp, "disk.qcow2")
        vars_copy = os.path.join(tmp, "efi_vars" + (os.path.splitext(efi_vars)[1] if efi_vars else ""))
        ign_file = ignition if isinstance(ignition, str) else (os.path.join(tmp, "ignition.json") if ignition else None)
        try:
            if prepared and not reuse:
                base = image
                if image.endswith(".bz2"):
                    base = os.path.join(tmp, os.path.basename(image)[:-4])
                    q.decompress_bz2(image, base, runner)
                fmt = q.image_format(base, runner, qemu_img)
                q.make_overlay(base, fmt, overlay, runner, qemu_img)
                if isinstance(ignition, dict):
                    with open(ign_file, "w", encoding="utf-8") as fh:
                        json.dump(ignition, fh)
                    os.chmod(ign_file, 0o600)
            if prepared and efi_vars and p["firmware"] == "uefi":
                shutil.copyfile(efi_vars, vars_copy)  # fresh variables on every boot (also the KVM->TCG retry)
        except q.QemuError as exc:
            self.fail(str(exc))
        except OSError as exc:
            self.fail("cannot prepare the boot files in %s: %s" % (tmp, exc))
        code_fmt = "qcow2" if efi_code and q.is_qcow2(efi_code) else "raw"
        vars_fmt = "qcow2" if efi_vars and q.is_qcow2(efi_vars) else "raw"
        return q.build_command(
            qemu, arch, accel, tag, console_log, overlay, "qcow2", firmware=p["firmware"], bios=bios,
            efi_code=efi_code, efi_code_format=code_fmt, efi_vars=vars_copy if efi_vars else None,
            efi_vars_format=vars_fmt, ignition=ign_file, memory=p["memory"], cpus=p["cpus"], ssh_port=ssh_port,
            no_reboot=p["no_reboot"], extra_args=p["extra_args"])


def _public_ssh(ssh):
    if not ssh:
        return ssh
    return {k: v for k, v in ssh.items() if k != "key"}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            image=dict(type="path"),
            firmware=dict(type="str", default="uefi", choices=["bios", "uefi"]),
            efi_code=dict(type="path"),
            efi_vars=dict(type="path"),
            efi_vars_warm=dict(type="bool", default=True),
            ignition=dict(type="raw"),
            success_markers=dict(type="list", elements="str"),
            success_match=dict(type="str", default="any", choices=["any", "all"]),
            failure_markers=dict(type="list", elements="str"),
            extra_failure_markers=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=180),
            tcg_timeout_factor=dict(type="float", default=3.0),
            accel=dict(type="str", default="auto", choices=["auto", "kvm", "tcg"]),
            memory=dict(type="int", default=2048),
            cpus=dict(type="int", default=2),
            ssh=dict(type="dict", options=dict(
                user=dict(type="str", default="core"),
                private_key=dict(type="path", no_log=False),
                inject_key=dict(type="bool", default=True),
                expect_version=dict(type="str"),
                command=dict(type="str", default="cat /etc/os-release"),
            )),
            no_reboot=dict(type="bool", default=True),
            extra_args=dict(type="list", elements="str", default=[]),
            console_log=dict(type="path"),
            cache_dir=dict(type="path", default="~/.cache/kiln"),
            work_dir=dict(type="path"),
            max_parallel=dict(type="int", default=0),
            slot_wait=dict(type="int", default=3600),
            lock_wait=dict(type="int", default=1800),
            probe_only=dict(type="bool", default=False),
            refresh_probe=dict(type="bool", default=False),
            scripts_dir=dict(type="path"),
            force=dict(type="bool", default=False),
            **dict(board_args(), **record_args())
        ),
        required_by={"scripts_dir": ["board"]},
        supports_check_mode=True,
    )
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _on_signal)
    check = Check(module)
    try:
        guarded(module, check.run)
    finally:
        check.cleanup()


if __name__ == "__main__":
    main()
