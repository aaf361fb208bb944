#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kola
short_description: Run Flatcar's kola tests on QEMU with Flatcar CI's retry semantics
version_added: 0.1.0
description:
  - Runs C(kola run) (a kola binary on the host, or the mantle container through docker/podman) against an image on the
    C(qemu) or C(qemu-unpriv) platform, like C(ci-automation/vendor-testing/qemu.sh).
  - Retries like C(ci-automation/test.sh) - after the first run only the tests that failed are run again; O(max_retries)
    counts every run, the first included, exactly like Flatcar's C(MAX_RETRIES); the TAP of every run is merged; the
    suite passes when every test passed at least once.
    A test that failed and then passed is reported as flaky.
  - Each run keeps its own TAP (C(run-<n>.tap)), output dir (C(run-<n>/)) and log (C(run-<n>.log)) under O(output_dir);
    the merged TAP and a JUnit XML report (surefire flavour, C(flakyFailure)/C(rerunFailure)) are written at the end.
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
  - kiln.flatcar._common
  - kiln.flatcar._common.board_required
  - kiln.flatcar._common.engine
  - kiln.flatcar._common.version
attributes:
  check_mode:
    support: full
    details: Reports the first kola command; runs nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run tests again.
options:
  kola:
    description: Path of the kola binary. Default C(kola) on C(PATH) unless O(container_image) is set.
    type: path
  container_image:
    description:
      - Run kola from this mantle container image (e.g. C(ghcr.io/flatcar/mantle:git-<sha>)) with
        C(--privileged --net host -v /dev:/dev), mounting O(output_dir) and the image and firmware directories at their
        host paths.
    type: str
  engine:
    description: Container engine for O(container_image).
  board:
    description: C(--board).
  platform:
    description: C(--platform). V(qemu) needs root; V(qemu-unpriv) runs single-node tests without DHCP.
    type: str
    choices: [qemu, qemu-unpriv]
    default: qemu
  image:
    description: C(--qemu-image), the image to test (Flatcar CI tests the generic C(flatcar_production_image.bin)).
    type: path
    required: true
  firmware:
    description:
      - C(--qemu-firmware). Flatcar CI uses C(/usr/share/qemu/bios-256k.bin) for BIOS and
        C(flatcar_production_qemu_uefi_efi_code.qcow2) for UEFI.
    type: path
  ovmf_vars:
    description: C(--qemu-ovmf-vars) (UEFI variables, e.g. C(flatcar_production_qemu_uefi_efi_vars.qcow2)).
    type: path
  parallel:
    description: C(--parallel), tests run at once (each VM takes about 2.5 GiB).
    type: int
    default: 1
  tests:
    description: Test names or globs (kola's positional arguments). An exact name ignores a test's version limits.
    type: list
    elements: str
    default: ["cl.*"]
  max_retries:
    description:
      - How many kola runs at most, the first one included (the failed tests of a run are run again until none
        fails or this many runs were made), with the meaning of C(MAX_RETRIES) in Flatcar's C(ci-automation/test.sh),
        whose C(for retry in $(seq "${retries}")) loop makes that many runs in all. C(1) means no rerun.
      - Flatcar CI defaults to 20; kiln's default of 4 keeps a broken image from costing more than four runs.
    type: int
    default: 4
  output_dir:
    description: Directory for per-run TAP, logs and kola output (C(--output-dir run-<n>)), and the merged reports.
    type: path
    required: true
  tapfile:
    description: Merged TAP. Default O(output_dir)C(/results.tap).
    type: path
  junit:
    description: JUnit XML report. Default O(output_dir)C(/results.xml).
    type: path
  version:
    description:
      - C(--image-version), the FLATCAR_VERSION of the image under test.
      - The alias O(image_version) is deprecated and will be removed in 2.0.0.
    aliases: [image_version]
  extra_args:
    description: More kola arguments, placed before the test names (e.g. C(--qemu-skip-mangle)).
    type: list
    elements: str
    default: []
  timeout:
    description:
      - Seconds one kola run may take before it is killed.
      - kola writes its TAP file only after the whole suite has returned, so a run that is killed leaves no TAP at all -
        the module then fails with that run's log tail and does not retry (no test result exists to retry from).
        Set it well above the suite's usual duration.
    type: int
    default: 14400
  environment:
    description: Extra environment for kola.
    type: dict
    default: {}
notes:
  - kola's C(qemu) platform needs root, C(net.ipv4.ip_forward=1), dnsmasq, iptables and swtpm on the host
    (C(sdk-modifying-flatcar.md)); the mantle container brings all of them.
seealso:
  - module: kiln.flatcar.boot_check
"""

EXAMPLES = r"""
- name: Run the basic kola tests against a UEFI image, at most 5 runs (failed tests rerun up to 4 times)
  kiln.flatcar.kola:
    board: amd64-usr
    image: /var/lib/kiln/scripts/__build__/images/images/amd64-usr/latest/flatcar_production_image.bin
    firmware: /var/lib/kiln/scripts/__build__/images/images/amd64-usr/latest/flatcar_production_qemu_uefi_efi_code.qcow2
    ovmf_vars: /var/lib/kiln/scripts/__build__/images/images/amd64-usr/latest/flatcar_production_qemu_uefi_efi_vars.qcow2
    tests: [cl.basic, "cl.locksmith.*"]
    parallel: 4
    max_retries: 5
    output_dir: /var/lib/kiln/kola/amd64
"""

RETURN = r"""
changed:
  description: True when kola ran.
  returned: always
  type: bool
success:
  description: Every test passed at least once.
  returned: always
  type: bool
runs:
  description: One entry per kola run (number, tests asked for, rc, tapfile, log, duration).
  returned: success
  type: list
  elements: dict
tests:
  description: Per-test results.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Test name.
      type: str
    status:
      description: V(passed), V(flaky) (failed, then passed), V(failed) (never passed) or V(skipped).
      type: str
    passed:
      description: Passed in at least one run.
      type: bool
    flaky:
      description: Failed in a run and passed in a later one.
      type: bool
    attempts:
      description: How many runs included it.
      type: int
    runs:
      description: Per attempt - run number, ok, skipped, diagnostic (kola's YAML block).
      type: list
      elements: dict
passed_tests:
  description: Names of tests that passed (flaky ones included).
  returned: success
  type: list
  elements: str
flaky_tests:
  description: Names of tests that failed and then passed.
  returned: success
  type: list
  elements: str
failed_tests:
  description: Names of tests that never passed (also returned when the task fails).
  returned: success
  type: list
  elements: str
tapfile:
  description: The merged TAP file.
  returned: success
  type: str
junit:
  description: The JUnit XML file.
  returned: success
  type: str
cmd:
  description: The first kola command (check mode - the command that would run).
  returned: always
  type: list
  elements: str
"""

import os
import shutil
import time
import uuid

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _tap, _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import board_args, detect_engine, engine_args, version_args
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import Runner, tail_lines
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import guarded, one_line


class Kola:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.output_dir = os.path.abspath(self.p["output_dir"])
        self.container = None
        self.engine = None
        self.base = self.locate()

    def locate(self):
        p = self.p
        module = self.module
        if p["container_image"]:
            if p["kola"]:
                module.fail_json(msg="set either kola or container_image, not both")
            self.engine = detect_engine(module, p["engine"])[1][0]
            self.container = "kiln-kola-%s" % uuid.uuid4().hex[:12]
            mounts = []
            for path in [self.output_dir, p["image"], p["firmware"], p["ovmf_vars"]]:
                if not path:
                    continue
                d = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
                if d not in mounts:
                    mounts.append(d)
            argv = [self.engine, "run", "--rm", "--name", self.container, "--privileged", "--net", "host",
                    "-v", "/dev:/dev", "-w", self.output_dir]
            for d in mounts:
                argv += ["-v", "%s:%s" % (d, d)]
            for key, value in sorted(p["environment"].items()):
                argv += ["-e", "%s=%s" % (key, value)]
            return argv + [p["container_image"], "kola"]
        kola = p["kola"]
        if kola:
            kola = os.path.abspath(kola)
            if not (os.path.isfile(kola) and os.access(kola, os.X_OK)):
                module.fail_json(msg="kola binary %s does not exist or is not executable" % kola)
        else:
            kola = module.get_bin_path("kola")
            if not kola:
                module.fail_json(msg="kola not found on PATH: set kola to the binary (from flatcar/mantle) or container_image")
        return [kola]

    def command(self, run, tests):
        p = self.p
        argv = list(self.base) + ["run", "--board=%s" % p["board"], "--platform=%s" % p["platform"],
                                  "--parallel=%d" % p["parallel"], "--qemu-image=%s" % os.path.abspath(p["image"]),
                                  "--tapfile=%s" % self.tapfile(run), "--output-dir=%s" % os.path.join(self.output_dir, "run-%d" % run)]
        if p["firmware"]:
            argv.append("--qemu-firmware=%s" % os.path.abspath(p["firmware"]))
        if p["ovmf_vars"]:
            argv.append("--qemu-ovmf-vars=%s" % os.path.abspath(p["ovmf_vars"]))
        if p["version"]:
            argv.append("--image-version=%s" % p["version"])
        argv += list(p["extra_args"])
        argv += list(tests)
        return argv

    def tapfile(self, run):
        return os.path.join(self.output_dir, "run-%d.tap" % run)

    def execute(self):
        p = self.p
        module = self.module
        first = self.command(1, p["tests"])
        if module.check_mode:
            module.exit_json(changed=True, success=True, cmd=first,
                             msg="would run kola at most %d times, rerunning only failed tests" % p["max_retries"])
        os.makedirs(self.output_dir, exist_ok=True)
        merged = _tap.Merged()
        runs = []
        tests = list(p["tests"])
        timeout = module.get_bin_path("timeout")
        for run in range(1, p["max_retries"] + 1):
            log = os.path.join(self.output_dir, "run-%d.log" % run)
            runner = Runner(module, log_path=log, env_allow=tuple(p["environment"]), env=p["environment"])
            tap = self.tapfile(run)
            if os.path.exists(tap):
                os.unlink(tap)
            out_dir = os.path.join(self.output_dir, "run-%d" % run)
            if os.path.isdir(out_dir):
                shutil.rmtree(out_dir)  # kola refuses to reuse an output dir
            argv = self.command(run, tests)
            wrapped = ([timeout, "--kill-after=60", str(p["timeout"])] if timeout else []) + argv
            start = time.monotonic()
            try:
                res = runner.run(wrapped, check=False)
            finally:
                if self.container:
                    module.run_command([self.engine, "rm", "-f", self.container])
            entry = {"run": run, "tests": tests, "rc": res.rc, "tapfile": tap, "log": log,
                     "duration_s": round(time.monotonic() - start, 3)}
            runs.append(entry)
            if not os.path.exists(tap):
                detail = " | ".join(tail_lines(log, 3))
                module.fail_json(msg=one_line("kola run %d exited with rc=%d without writing its TAP file %s: %s"
                                              % (run, res.rc, tap, detail)),
                                 rc=res.rc, cmd=argv, log_path=log, log_tail=tail_lines(log), runs=runs,
                                 tests=merged.as_list(), passed_tests=merged.passed(), flaky_tests=merged.flaky(),
                                 failed_tests=merged.failed())
            try:
                results, _plan = _tap.parse_file(tap)
            except _tap.TapError as exc:
                module.fail_json(msg=str(exc), rc=res.rc, cmd=argv, log_path=log, log_tail=tail_lines(log), runs=runs)
            entry["results"] = len(results)
            if run == 1 and not results:
                module.fail_json(msg=one_line("kola run 1 ran no tests (rc=%d): check the test names %s"
                                              % (res.rc, ", ".join(tests))),
                                 rc=res.rc, cmd=argv, log_path=log, log_tail=tail_lines(log), runs=runs)
            merged.add_run(results, run)
            if run > 1:
                # a retried test missing from the TAP did not pass this time either
                seen = set(r.name for r in results)
                merged.add_missing([t for t in tests if t not in seen], run, "not in the TAP of run %d (rc=%d)" % (run, res.rc))
            if res.rc != 0 and all(r.ok for r in results):
                module.warn("kola run %d exited with rc=%d although its TAP shows no failure; see %s" % (run, res.rc, log))
            tests = merged.failed()
            if not tests:
                break
        tapfile = os.path.abspath(p["tapfile"] or os.path.join(self.output_dir, "results.tap"))
        junit = os.path.abspath(p["junit"] or os.path.join(self.output_dir, "results.xml"))
        _tap.write_tap(merged, tapfile)
        _tap.write_junit(merged, junit, suite="kola.%s.%s" % (p["board"], p["platform"]),
                         properties={"board": p["board"], "platform": p["platform"], "image": p["image"],
                                     "runs": len(runs), "max_retries": p["max_retries"]})
        ret = dict(changed=True, success=merged.success, runs=runs, tests=merged.as_list(), passed_tests=merged.passed(),
                   flaky_tests=merged.flaky(), failed_tests=merged.failed(), tapfile=tapfile, junit=junit, cmd=first)
        if not merged.success:
            failed = merged.failed()
            last = runs[-1]
            module.fail_json(msg=one_line("kola: %d of %d tests never passed in %d runs (%s); see %s and %s"
                                          % (len(failed), len(merged.order), len(runs), ", ".join(failed[:10]), tapfile,
                                             last["log"])),
                             rc=last["rc"], log_path=last["log"], log_tail=tail_lines(last["log"]), **ret)
        module.exit_json(**ret)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kola=dict(type="path"),
            container_image=dict(type="str"),
            platform=dict(type="str", default="qemu", choices=["qemu", "qemu-unpriv"]),
            image=dict(type="path", required=True),
            firmware=dict(type="path"),
            ovmf_vars=dict(type="path"),
            parallel=dict(type="int", default=1),
            tests=dict(type="list", elements="str", default=["cl.*"]),
            max_retries=dict(type="int", default=4),
            output_dir=dict(type="path", required=True),
            tapfile=dict(type="path"),
            junit=dict(type="path"),
            extra_args=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=14400),
            environment=dict(type="dict", default={}),
            **dict(board_args(required=True), **engine_args(), **version_args(aliases=("image_version",)))
        ),
        mutually_exclusive=[["kola", "container_image"]],
        supports_check_mode=True,
    )
    guarded(module, lambda: _main(module))


def _main(module):
    p = module.params
    if p["version"]:
        p["version"] = _validate.check(module, _validate.version, p["version"], "version").version
    if p["parallel"] < 1 or p["max_retries"] < 1 or p["timeout"] < 1:
        module.fail_json(msg="parallel, timeout and max_retries (total runs, like Flatcar's MAX_RETRIES) must be at least 1")
    if not p["tests"]:
        module.fail_json(msg="tests is empty: name at least one kola test or glob, e.g. cl.basic")
    if not os.path.isfile(p["image"]):
        module.fail_json(msg="image %s does not exist" % p["image"])
    for key in ("firmware", "ovmf_vars"):
        if p[key] and not os.path.isfile(p[key]):
            module.fail_json(msg="%s %s does not exist" % (key, p[key]))
    Kola(module).execute()


if __name__ == "__main__":
    main()
