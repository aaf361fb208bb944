# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""kiln.flatcar.publish, part 2: the publish gate (contract described in docs/publishing.md).

:func:`evaluate` looks at the build record and the manifest only; cryptographic signature checks go
through ``_gpg.Gpg`` with a temporary keyring holding just the given public key (:func:`gpg_problems`).
"""

from __future__ import annotations

import os

from ansible_collections.kiln.flatcar.plugins.module_utils._gpg import Gpg
from ansible_collections.kiln.flatcar.plugins.module_utils._pub_manifest import PublishError, base_name

# Files flatcar-install, users and the update generator download and must be able to verify.
SIGNED_ROLES = (
    "generic_image", "vm_image", "update_image", "kernel", "bootloader", "sysext_base", "oem_sysext",
    "extra_sysext", "sysext", "container_tarball", "developer_container", "update_generator",
)


def passed_boot_checks(release):
    """Names of boot_check:<firmware> stages with status passed and details.verdict == passed."""
    found = []
    for name in release.data["stage_order"]:
        stage = release.stages.get(name)
        if not name.startswith("boot_check:") or not isinstance(stage, dict) or stage.get("status") != "passed":
            continue
        if isinstance(stage.get("details"), dict) and stage["details"].get("verdict") == "passed":
            found.append(name)
    return found


def signature_pairs(files):
    """([(sig, file)] for every release file that needs a .sig and has one, [names without one], [sigs not from sign])."""
    sigs = dict((f.name, f) for f in files if f.area == "release" and f.name.endswith(".sig"))
    needing = [f for f in files if f.area == "release" and f.role in SIGNED_ROLES and base_name(f.name) == f.name]
    pairs, missing, wrong_stage = [], [], []
    for f in needing:
        sig = sigs.get(f.name + ".sig")
        if sig is None:
            missing.append(f.name)
            continue
        pairs.append((sig, f))
        if sig.stage != "sign":
            wrong_stage.append(sig.name)
    return pairs, missing, wrong_stage


def evaluate(release, files, require_boot_check=True, boot_check_stages=(), require_signatures=True, verify=None):
    """The gate result dict. ``verify`` (optional) checks [(sig, file)] cryptographically and returns problems."""
    problems = []
    boot_ok = passed_boot_checks(release)
    if require_boot_check:
        if boot_check_stages:
            problems += ["%s has not passed (needs status passed and details.verdict == passed)" % n
                         for n in boot_check_stages if n not in boot_ok]
        elif not boot_ok:
            problems.append("no passed boot check (a stage boot_check:<firmware> with details.verdict == passed)")
    sig_count = 0
    if require_signatures:
        sign = release.stages.get("sign")
        if not isinstance(sign, dict) or sign.get("status") != "passed":
            problems.append("stage sign has not passed")
        pairs, missing, wrong_stage = signature_pairs(files)
        if missing:
            problems.append("no signature (.sig from stage sign) for %s" % ", ".join(missing))
        if wrong_stage:
            problems.append("signatures not recorded by stage sign: %s" % ", ".join(wrong_stage))
        if verify is not None and not missing:
            problems.extend(verify(pairs))
        sig_count = len(pairs)
    return {"passed": not problems, "overridden": False, "reason": None, "problems": problems,
            "boot_checks": boot_ok, "signatures": sig_count}


def apply_override(gate, release, override, reason):
    """Raise unless the gate passed or is overridden with a reason; returns the (updated) gate."""
    if gate["passed"]:
        return gate
    problems = "; ".join(gate["problems"])
    if not override:
        raise PublishError("publish gate refused %s %s: %s; fix the build or set gate_override with gate_override_reason"
                           % (release.board, release.version, problems), gate=gate)
    if not (reason or "").strip():
        raise PublishError("gate_override needs gate_override_reason: say why this build may be published without %s" % problems,
                           gate=gate)
    return dict(gate, overridden=True, reason=" ".join(reason.split()))


def gpg_problems(runner, key_file, workdir, pairs, gpg="gpg", gpgconf="gpgconf"):
    """Problems of [(sig, file)] checked with gpg --verify against a keyring holding only ``key_file``."""
    home = os.path.join(workdir, "gnupg")
    os.makedirs(home, mode=0o700, exist_ok=True)
    keyring = Gpg(runner, homedir=home, binary=gpg, gpgconf=gpgconf)
    try:
        ok, fingerprints = keyring.import_keys(key_file)
        if not ok:
            raise PublishError("cannot import signing_key %s into a temporary keyring: is it an armored public key?" % key_file)
        problems = []
        for sig, f in pairs:
            info = keyring.verify(sig.source, f.source)
            if not info["valid"] or (info["primary"] not in fingerprints and info["fingerprint"] not in fingerprints):
                problems.append("%s does not verify with signing_key (%s)" % (sig.name, info["reason"] or "made by another key"))
        return problems
    finally:
        keyring.kill_agent()
        keyring.close()
