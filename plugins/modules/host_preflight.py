#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: host_preflight
short_description: Check a build host (programs, free disk, memory, loop devices) and register qemu-user-static for arm64
version_added: 0.2.0
description:
  - Checks that the named programs are on C(PATH), measures the free disk of the filesystem holding O(path)
    (the nearest existing parent when O(path) does not exist yet) and the total memory, and checks for loop devices.
  - With O(binfmt_aarch64=true), makes sure qemu-user-static runs aarch64 binaries through binfmt_misc, the way
    Flatcar cross-builds arm64 on amd64 hosts; mounts binfmt_misc first when O(binfmt_mount=true) and it is not
    mounted. An existing C(qemu-aarch64) registration is left alone.
  - Every check that fails is one line in RV(problems); with O(fail_on_problems=true) (the default) the module fails
    with those lines joined into one message.
  - In check mode nothing is mounted or registered; RV(binfmt.state) says what would be done.
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Reports C(changed) only when it mounted binfmt_misc or registered the emulator.
options:
  programs:
    description: Programs that must be found on C(PATH) (names, not paths).
    type: list
    elements: str
    default: []
  path:
    description: A path on the filesystem whose free space is measured (need not exist yet).
    type: path
  min_free_gb:
    description: Minimum free space in GiB on the filesystem of O(path); V(0) only measures.
    type: float
    default: 0
  min_mem_gb:
    description: Minimum total memory in GiB (C(MemTotal) of C(/proc/meminfo)); V(0) only measures.
    type: float
    default: 0
  require_loop:
    description: Require C(/dev/loop-control) (C(build_image) partitions disk images through loop devices).
    type: bool
    default: false
  binfmt_aarch64:
    description: Make sure aarch64 binaries run through qemu-user-static (binfmt_misc entry C(qemu-aarch64)).
    type: bool
    default: false
  binfmt_mount:
    description: Mount binfmt_misc on O(binfmt_misc_dir) when it is not mounted.
    type: bool
    default: true
  binfmt_required:
    description: Count an aarch64 registration that cannot be made as a problem (otherwise it is only a warning).
    type: bool
    default: false
  binfmt_interpreter:
    description: The static aarch64 emulator registered as interpreter (registered with flag C(F), so it must exist).
    type: path
    default: /usr/bin/qemu-aarch64-static
  binfmt_misc_dir:
    description: Where binfmt_misc is mounted.
    type: path
    default: /proc/sys/fs/binfmt_misc
  fail_on_problems:
    description: Fail when a check fails. V(false) returns the problems for the caller to word its own refusal.
    type: bool
    default: true
notes:
  - Mounting binfmt_misc and registering an interpreter need root (or C(CAP_SYS_ADMIN)); binfmt_misc is shared by every
    network namespace and container of the kernel.
seealso:
  - name: binfmt_misc
    description: The kernel's documentation of the registration format.
    link: https://docs.kernel.org/admin-guide/binfmt-misc.html
"""

EXAMPLES = r"""
- name: Preflight a builder
  kiln.flatcar.host_preflight:
    programs: [docker, git, rsync, zstd]
    path: /var/lib/kiln
    min_free_gb: 60
    min_mem_gb: 8
    require_loop: true

- name: Let an amd64 builder run arm64 binaries (report only in --check)
  kiln.flatcar.host_preflight:
    binfmt_aarch64: true
    binfmt_required: true

- name: Measure and decide in the play
  kiln.flatcar.host_preflight:
    path: /var/lib/kiln
    min_free_gb: 60
    fail_on_problems: false
  register: preflight
"""

RETURN = r"""
changed:
  description: Whether binfmt_misc was mounted or the emulator registered (in check mode, would be).
  returned: always
  type: bool
problems:
  description: One line per failed check (empty when the host passes).
  returned: always
  type: list
  elements: str
notices:
  description: Things that are not problems but should be known (an aarch64 registration that cannot be made).
  returned: always
  type: list
  elements: str
programs_missing:
  description: Programs of O(programs) not found on C(PATH).
  returned: always
  type: list
  elements: str
  sample: [zstd]
programs_found:
  description: Program name to the path it was found at.
  returned: always
  type: dict
free_gb:
  description: Free GiB (for unprivileged users) on the filesystem of O(path), one decimal; null without O(path).
  returned: always
  type: float
  sample: 71.3
free_path:
  description: The existing path that was measured (O(path) or its nearest existing parent).
  returned: when O(path) is set
  type: str
mem_gb:
  description: Total memory in GiB, one decimal; null when C(/proc/meminfo) cannot be read.
  returned: always
  type: float
loop:
  description: Whether C(/dev/loop-control) exists.
  returned: always
  type: bool
binfmt:
  description: The aarch64 emulation state.
  returned: always
  type: dict
  contains:
    state:
      description:
        - V(not needed), V(registered), V(would register) (check mode), V(binfmt_misc not mountable),
          V(interpreter missing) or V(registration failed).
      type: str
    ok:
      description: Whether aarch64 binaries run (or, in check mode, would run) through binfmt_misc.
      type: bool
    mounted:
      description: Whether binfmt_misc is (or in check mode would be) mounted.
      type: bool
    entry:
      description: The registration entry file.
      type: str
    detail:
      description: Why the registration could not be made, when it could not.
      type: str
"""

import os
import shutil

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils._runner import Runner
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import guarded

GIB = 1024.0 ** 3
ENTRY = "qemu-aarch64"
# ELF64 little-endian, e_machine EM_AARCH64 (as qemu's qemu-binfmt-conf.sh registers it); the kernel decodes \x escapes.
AARCH64_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"


def registration(interpreter):
    """The line written to binfmt_misc/register: name, type M(agic), offset, magic, mask, interpreter, flags."""
    return ":%s:M::%s:%s:%s:F" % (ENTRY, AARCH64_MAGIC, AARCH64_MASK, interpreter)


def nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def free_gib(path):
    st = os.statvfs(path)
    return round(st.f_bavail * st.f_frsize / GIB, 1)


def mem_gib(meminfo="/proc/meminfo"):
    try:
        with open(meminfo, "r", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) * 1024 / GIB, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def binfmt(module, runner, p):
    """Make sure (or in check mode, tell whether) aarch64 binaries run through binfmt_misc."""
    d = p["binfmt_misc_dir"]
    entry = os.path.join(d, ENTRY)
    register = os.path.join(d, "register")
    out = {"state": "not needed", "ok": True, "mounted": os.path.exists(register), "entry": entry, "detail": ""}
    if not p["binfmt_aarch64"]:
        return out, False
    changed = False
    if os.path.exists(entry):
        out.update(state="registered", ok=True)
        return out, False
    if not out["mounted"]:
        if not p["binfmt_mount"]:
            out.update(state="binfmt_misc not mountable", ok=False, detail="binfmt_misc is not mounted on %s and binfmt_mount is false" % d)
            return out, False
        if module.check_mode:
            # Whether the kernel allows the mount is only known by trying; check mode does not try.
            if not os.path.exists(p["binfmt_interpreter"]):
                out.update(state="interpreter missing", ok=False, detail="%s does not exist" % p["binfmt_interpreter"])
                return out, False
            out.update(state="would register", ok=True, mounted=True, detail="would mount binfmt_misc on %s first" % d)
            return out, True
        rc, _out, err = runner.capture(["mount", "-t", "binfmt_misc", "--", "binfmt_misc", d])
        if rc != 0 or not os.path.exists(register):
            line = (err or "").strip().splitlines()
            out.update(state="binfmt_misc not mountable", ok=False,
                       detail="mount -t binfmt_misc failed with rc=%d%s" % (rc, (": " + line[-1]) if line else ""))
            return out, False
        out["mounted"] = True
        changed = True
        if os.path.exists(entry):  # the mount revealed an existing registration
            out.update(state="registered", ok=True)
            return out, changed
    if not os.path.exists(p["binfmt_interpreter"]):
        out.update(state="interpreter missing", ok=False, detail="%s does not exist" % p["binfmt_interpreter"])
        return out, changed
    if module.check_mode:
        out.update(state="would register", ok=True)
        return out, True
    try:
        # binfmt_misc takes exactly one registration per write()
        with open(register, "wb", buffering=0) as fh:
            fh.write(registration(p["binfmt_interpreter"]).encode("ascii"))
    except OSError as exc:
        out.update(state="registration failed", ok=False, detail="writing %s failed: %s" % (register, exc.strerror or exc))
        return out, changed
    out.update(state="registered", ok=True)
    return out, True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            programs=dict(type="list", elements="str", default=[]),
            path=dict(type="path"),
            min_free_gb=dict(type="float", default=0),
            min_mem_gb=dict(type="float", default=0),
            require_loop=dict(type="bool", default=False),
            binfmt_aarch64=dict(type="bool", default=False),
            binfmt_mount=dict(type="bool", default=True),
            binfmt_required=dict(type="bool", default=False),
            binfmt_interpreter=dict(type="path", default="/usr/bin/qemu-aarch64-static"),
            binfmt_misc_dir=dict(type="path", default="/proc/sys/fs/binfmt_misc"),
            fail_on_problems=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    guarded(module, lambda: _main(module))


def _main(module):
    p = module.params
    if p["min_free_gb"] and not p["path"]:
        module.fail_json(msg="min_free_gb needs path: the filesystem to measure")
    # No log file: nothing here is long-running, and check mode must not write one.
    runner = Runner(module)
    problems = []
    notices = []
    result = {}

    found = {}
    missing = []
    for name in p["programs"]:
        if "/" in name:
            module.fail_json(msg="programs takes names found on PATH, not paths: %s" % name)
        where = shutil.which(name, path=os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if where:
            found[name] = where
        else:
            missing.append(name)
    result.update(programs_found=found, programs_missing=missing)
    if missing:
        problems.append("%s not found on PATH: install %s" % (", ".join(missing), "it" if len(missing) == 1 else "them"))

    result["free_gb"] = None
    if p["path"]:
        measured = nearest_existing(p["path"])
        result["free_path"] = measured
        try:
            result["free_gb"] = free_gib(measured)
        except OSError as exc:
            module.fail_json(msg="cannot measure free space on %s: %s" % (measured, exc.strerror or exc), **result)
        if p["min_free_gb"] and result["free_gb"] < p["min_free_gb"]:
            problems.append("%s GiB free on %s, need %s GiB: free disk or use another host"
                            % (result["free_gb"], p["path"], _num(p["min_free_gb"])))

    result["mem_gb"] = mem_gib()
    if p["min_mem_gb"]:
        if result["mem_gb"] is None:
            problems.append("cannot read the memory size from /proc/meminfo")
        elif result["mem_gb"] < p["min_mem_gb"]:
            problems.append("%s GiB memory, need %s GiB: add memory or use another host" % (result["mem_gb"], _num(p["min_mem_gb"])))

    result["loop"] = os.path.exists("/dev/loop-control")
    if p["require_loop"] and not result["loop"]:
        problems.append("/dev/loop-control is missing: build_image needs loop devices (modprobe loop, or give the "
                        "container/VM access to them)")

    result["binfmt"], changed = binfmt(module, runner, p)
    if not result["binfmt"]["ok"]:
        line = "cannot register qemu-user-static for aarch64 (%s: %s): %s" % (
            result["binfmt"]["state"], result["binfmt"]["detail"],
            "mount binfmt_misc (mount -t binfmt_misc binfmt_misc %s) or build arm64 on a native arm64 builder" % p["binfmt_misc_dir"]
            if result["binfmt"]["state"] == "binfmt_misc not mountable"
            else "install qemu-user-static (it provides %s)" % p["binfmt_interpreter"])
        (problems if p["binfmt_required"] else notices).append(line)

    result.update(changed=changed, problems=problems, notices=notices)
    if problems and p["fail_on_problems"]:
        module.fail_json(msg="; ".join(problems), **result)
    for line in notices:
        module.warn(line)
    module.exit_json(**result)


def _num(value):
    return int(value) if float(value).is_integer() else value


if __name__ == "__main__":
    main()
