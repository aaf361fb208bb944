#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_sign
short_description: Write Flatcar-compatible DIGESTS and GnuPG signatures for build artifacts
version_added: 0.1.0
description:
  - For every selected file writes C(<file>.DIGESTS) byte-compatible with Flatcar's C(create_digests)
    (sections C(# MD5 HASH), C(# SHA1 HASH), C(# SHA512 HASH)), computed in one read pass per file;
    C(<file>.DIGESTS.asc) (clearsigned) and C(<file>.sig) (binary detached signature) as C(sign_artifacts) does;
    and, like C(sign_artifacts <signer> <file>*), C(<file>.DIGESTS.sig).
  - Before anything is signed every selected file that the build record lists must still have its recorded sha256;
    otherwise nothing is signed and the task fails naming the file.
  - Files already correctly signed by the same key (DIGESTS match, signatures verify with that key) are skipped;
    a changed file is re-hashed and re-signed. All new files are written under temporary names and renamed into
    place only after every signature succeeded, so a failure (wrong passphrase, expired key) leaves nothing signed.
  - Records the signer fingerprint and the signature files in the build record (stage C(sign)).
  - The key is chosen by full fingerprint. A passphrase goes to gpg on stdin (C(--pinentry-mode loopback
    --passphrase-fd 0)), never on the command line. A key or signing subkey expiring within O(expire_warn_days)
    gives a warning; an expired one fails.
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
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  files:
    description:
      - Files to sign. Relative paths are taken relative to O(directory), else to the build root.
      - Names ending in C(.asc), C(.gpg), C(.sig) or C(.DIGESTS) are skipped, as C(create_digests) does.
    type: list
    elements: path
  directory:
    description:
      - Sign every regular file under this directory (recursively, symlinks skipped) that is not itself a
        signature or DIGESTS file.
    type: path
  record_path:
    description:
      - Build record (C(<build_root>/kiln/<board>/<version>/build-record.json)). On a signer host, copy the record
        with the artifacts keeping their paths relative to the build root.
      - Without O(files) and O(directory), every output the record lists (except signatures) is signed.
    type: path
  scripts_dir:
    description: Flatcar scripts checkout; with O(board) locates the build record like the build modules do.
    type: path
  allow_unrecorded:
    description: With a build record, also sign selected files the record does not list (they cannot be checked).
    type: bool
    default: false
  key_fingerprint:
    description: Full fingerprint (40 hex digits) of the signing key. Short ids and user ids are refused.
    type: str
    required: true
  gnupghome:
    description: GnuPG home holding the secret key. Defaults to gpg's own default (C(~/.gnupg)).
    type: path
  passphrase:
    description: Passphrase of the secret key, fed to gpg on stdin. Omit for unprotected keys, smartcards or a primed agent.
    type: str
  expire_warn_days:
    description: Warn when the key or its signing subkey expires within this many days.
    type: int
    default: 30
  digest_algo:
    description: Hash algorithm of the OpenPGP signatures.
    type: str
    default: SHA512
    choices: [SHA256, SHA384, SHA512]
  sign_digests_file:
    description: Also write C(<file>.DIGESTS.sig) (C(sign_artifacts) on C(<file>*) signs the DIGESTS file too).
    type: bool
    default: true
  force:
    description: Re-sign every file even when its signatures are current.
    type: bool
    default: false
  log_path:
    description:
      - Log file for the gpg runs. Defaults to C(logs/sign.log) next to the build record, else C($TMPDIR/kiln-<uid>/artifact_sign.log).
      - Check mode writes no log.
    type: path
notes:
  - gpg-agent caches passphrases (default 10 minutes); set C(default-cache-ttl 0) in the signer's C(gpg-agent.conf)
    (the M(kiln.flatcar.signer) role does) so a passphrase is always checked.
seealso:
  - module: kiln.flatcar.artifact_verify
"""

EXAMPLES = r"""
- name: Sign the image artifacts listed in the build record copied to the signer
  kiln.flatcar.artifact_sign:
    record_path: /srv/signing/images/kiln/amd64-usr/4593.2.5/build-record.json
    key_fingerprint: 0123456789ABCDEF0123456789ABCDEF01234567
    gnupghome: /var/lib/kiln-signer/gnupg
    passphrase: "{{ vault_signing_passphrase }}"

- name: Sign a directory without a record
  kiln.flatcar.artifact_sign:
    directory: /srv/release/4593.2.5
    key_fingerprint: 0123456789ABCDEF0123456789ABCDEF01234567
"""

RETURN = r"""
changed:
  description: Whether any file was (or in check mode would be) signed, or the record was updated.
  returned: always
  type: bool
signed:
  description: Files signed by this run (absolute paths).
  returned: success
  type: list
  elements: str
unchanged:
  description: Files whose DIGESTS and signatures were already current.
  returned: success
  type: list
  elements: str
files:
  description: Per file, its hashes and signature files.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: Absolute path of the artifact.
      type: str
    size:
      description: Size in bytes.
      type: int
    sha256:
      description: SHA-256 (hex), computed in the same pass as the DIGESTS.
      type: str
    sha512:
      description: SHA-512 (hex).
      type: str
    digests:
      description: Path of the C(.DIGESTS) file.
      type: str
    signatures:
      description: Paths of the C(.DIGESTS.asc), C(.sig) and C(.DIGESTS.sig) files.
      type: list
      elements: str
    action:
      description: V(signed) or V(unchanged).
      type: str
    reason:
      description: Why the file was (re-)signed.
      type: str
signer_fingerprint:
  description: Fingerprint of the primary key.
  returned: success
  type: str
signing_key_fingerprint:
  description: Fingerprint of the (sub)key that makes the signatures.
  returned: success
  type: str
key_expires:
  description: Expiry of the signing (sub)key (ISO date) or V(never).
  returned: success
  type: str
record_path:
  description: Build record that was checked and updated.
  returned: when a record is used
  type: str
log_path:
  description: Log of the gpg runs.
  returned: always
  type: str
"""

import os
import time

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _digests
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import board_args, record_args
from ansible_collections.kiln.flatcar.plugins.module_utils._artifacts import list_files
from ansible_collections.kiln.flatcar.plugins.module_utils._gpg import Gpg, GpgError, normalize_fingerprint, signing_key_status
from ansible_collections.kiln.flatcar.plugins.module_utils._record import RecordError
from ansible_collections.kiln.flatcar.plugins.module_utils._safety import ExitCleanup
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import LocateError, Stage, guarded, locate

STAGE = "sign"


def select_files(module, p, root, recorded):
    chosen = []
    if p["files"]:
        base = p["directory"] or root
        for f in p["files"]:
            if not os.path.isabs(f):
                if not base:
                    module.fail_json(msg="file %s is relative but there is no directory or build root to resolve it" % f)
                f = os.path.join(base, f)
            chosen.append(os.path.abspath(f))
    elif p["directory"]:
        chosen = list_files(p["directory"])
    elif recorded is not None:
        chosen = [os.path.join(root, rel) for rel in sorted(recorded)]
    else:
        module.fail_json(msg="nothing to sign: give files, directory, record_path or scripts_dir + board")
    out = []
    for f in chosen:
        if not _digests.is_signable(f) or ".kiln-tmp" in os.path.basename(f):
            continue
        if not os.path.isfile(f):
            module.fail_json(msg="%s does not exist: nothing was signed" % f)
        out.append(f)
    if not out:
        module.fail_json(msg="no signable files selected (signature and DIGESTS files are skipped)")
    return sorted(set(out))


def outputs_for(path, sign_digests_file):
    df = _digests.digests_path(path)
    sigs = [df + ".asc", path + ".sig"]
    if sign_digests_file:
        sigs.append(df + ".sig")
    return df, sigs


def current_state(gpg, path, hashes, expected_digests, primary, sign_digests_file):
    """None when the existing DIGESTS and signatures are correct for this key, else the reason to sign."""
    df, sigs = outputs_for(path, sign_digests_file)
    try:
        with open(df, "rb") as fh:
            existing = fh.read()
    except OSError:
        return "no DIGESTS"
    if existing != expected_digests:
        return "DIGESTS out of date (file changed)"
    for s in sigs:
        if not os.path.isfile(s):
            return "%s missing" % os.path.basename(s)
    asc = sigs[0]
    with open(asc, "rb") as fh:
        clear = _digests.clearsigned_text(fh.read())
    if clear is None or clear.encode("utf-8", "surrogateescape") != expected_digests:
        return "DIGESTS.asc does not hold the current DIGESTS"
    checks = [(asc, None), (path + ".sig", path)]
    if sign_digests_file:
        checks.append((df + ".sig", df))
    for sig, data in checks:
        info = gpg.verify(sig, data)
        if not info["valid"]:
            return "%s: %s" % (os.path.basename(sig), info["reason"] or "does not verify")
        if primary not in (info["primary"], info["fingerprint"]):
            return "%s is signed by another key (%s)" % (os.path.basename(sig), info["primary"])
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="path"),
            directory=dict(type="path"),
            scripts_dir=dict(type="path"),
            allow_unrecorded=dict(type="bool", default=False),
            key_fingerprint=dict(type="str", required=True, no_log=False),  # a public fingerprint, not a secret
            gnupghome=dict(type="path"),
            passphrase=dict(type="str", no_log=True),
            expire_warn_days=dict(type="int", default=30),
            digest_algo=dict(type="str", default="SHA512", choices=["SHA256", "SHA384", "SHA512"]),
            sign_digests_file=dict(type="bool", default=True),
            force=dict(type="bool", default=False),
            log_path=dict(type="path"),
            **dict(board_args(), **record_args())
        ),
        required_together=[("scripts_dir", "board")],
        mutually_exclusive=[("record_path", "scripts_dir")],
        supports_check_mode=True,
    )
    guarded(module, lambda: _main(module))


def _main(module):
    p = module.params
    try:
        fpr = normalize_fingerprint(p["key_fingerprint"])
        location = locate(p["record_path"], p["scripts_dir"], p["board"], build_root=p["build_root"])
    except (GpgError, LocateError) as exc:
        module.fail_json(msg=str(exc))
    with Stage(module, STAGE, location, log_path=p["log_path"]) as stage:
        runner = stage.runner()
        if module.get_bin_path("gpg") is None:
            runner.fail("gpg not found on this host: install gnupg")
        gpg = Gpg(runner, p["gnupghome"])
        try:
            _run(module, stage, runner, gpg, fpr)
        finally:
            gpg.close()


def check_key(module, runner, gpg, fpr, result):
    """The signing key: present with its secret part, not expired. Returns (primary, chosen signing entry)."""
    key = gpg.list_key(fpr, secret=True)
    if key is None:
        runner.fail("secret key %s is not in the GnuPG home %s: import it (role kiln.flatcar.signer) or fix key_fingerprint; "
                    "nothing was signed" % (fpr, gpg.homedir or "~/.gnupg"))
    try:
        chosen, warnings = signing_key_status(key, module.params["expire_warn_days"])
    except GpgError as exc:
        runner.fail("%s; nothing was signed" % exc)
    for w in warnings:
        module.warn(w)
    result.update(signer_fingerprint=key["fingerprint"], signing_key_fingerprint=chosen["fingerprint"],
                  key_expires=time.strftime("%Y-%m-%d", time.gmtime(chosen["expires"])) if chosen["expires"] else "never")
    return key["fingerprint"], chosen


def hash_selected(p, stage, runner, files, recorded):
    """One read pass per file; every file the record lists must still match it. [(path, hashes, DIGESTS bytes)]"""
    entries = []
    for f in files:
        hashes = _digests.hash_file(f)
        if recorded is not None:
            rel = stage.location.relative(f)
            rec = recorded.get(rel) if rel else None
            if rec is None:
                if not p["allow_unrecorded"]:
                    runner.fail("%s is not listed in the build record %s: refusing to sign it (allow_unrecorded: true "
                                "to sign it anyway); nothing was signed" % (f, stage.location.record_path))
            elif rec.get("sha256") != hashes["sha256"] or rec.get("size") != hashes["size"]:
                runner.fail("%s no longer matches the build record (sha256 %s, recorded %s from stage %s): refusing to sign; "
                            "nothing was signed" % (f, hashes["sha256"][:16], str(rec.get("sha256"))[:16], rec.get("stage")))
        entries.append((f, hashes, _digests.render(os.path.basename(f), hashes)))
    return entries


def _run(module, stage, runner, gpg, fpr):
    p = module.params
    root = stage.location.build_root
    recorded = _digests.recorded_files(stage.record.data) if stage.record is not None else None
    files = select_files(module, p, root, recorded)
    result = stage.base_result()
    primary, chosen = check_key(module, runner, gpg, fpr, result)
    plan = []
    for f, hashes, text in hash_selected(p, stage, runner, files, recorded):
        reason = "force" if p["force"] else current_state(gpg, f, hashes, text, primary, p["sign_digests_file"])
        plan.append((f, hashes, text, reason))
    to_sign = [x for x in plan if x[3]]
    current, _why = stage.is_current({
        "stage": STAGE,
        "key": primary,
        "files": [[os.path.relpath(f, root) if root else f, h["sha256"]] for f, h, _t, _r in plan],
        "digest_algo": p["digest_algo"],
        "sign_digests_file": p["sign_digests_file"],
    })
    result.update(signed=[x[0] for x in to_sign], unchanged=[x[0] for x in plan if not x[3]], files=[])
    for f, h, _t, reason in plan:
        df, sigs = outputs_for(f, p["sign_digests_file"])
        result["files"].append({"path": f, "size": h["size"], "sha256": h["sha256"], "sha512": h["sha512"],
                                "digests": df, "signatures": sigs, "action": "signed" if reason else "unchanged",
                                "reason": reason})
    record_stale = stage.record is not None and not current
    result["changed"] = bool(to_sign) or record_stale
    if module.check_mode or not result["changed"]:
        module.exit_json(**result)
    stage.begin()
    sign_files(module, runner, gpg, fpr, primary, chosen, to_sign, result)
    outputs = []
    try:
        for f, _h, _t, _r in plan:
            if stage.record is not None and stage.location.relative(f):  # outside the build root (allow_unrecorded): not recorded
                outputs.extend(stage.describe(path, "signature") for path in _flat(outputs_for(f, p["sign_digests_file"])))
    except (RecordError, OSError) as exc:
        runner.fail("cannot record the signatures: %s" % exc)
    stage.finish(outputs, details={
        "signer_fingerprint": primary,
        "signing_key_fingerprint": result["signing_key_fingerprint"],
        "key_expires": result["key_expires"],
        "signed": [os.path.relpath(x[0], root) for x in to_sign] if root else [x[0] for x in to_sign],
        "signature_files": [o["path"] for o in outputs],
        "files": [{"path": os.path.relpath(f, root) if root else f, "sha256": h["sha256"], "sha512": h["sha512"]}
                  for f, h, _t, _r in plan],
    })
    module.exit_json(**result)


def _flat(outputs):
    df, sigs = outputs
    return [df] + sigs


def sign_files(module, runner, gpg, fpr, primary, chosen, to_sign, result):
    """Sign into temporary names; rename only when every signature succeeded.

    Every temporary name is listed before it is created, and removed on every way out (a failed signature, a read-only
    or full destination, an exception, SIGTERM/SIGINT/SIGHUP), so a failure leaves no partial C(.kiln-tmp-*) file."""
    staged = []
    with ExitCleanup() as cleanup:
        cleanup.add(lambda: _cleanup(staged))
        try:
            _sign_staged(module, runner, gpg, fpr, primary, chosen, to_sign, result, staged)
            # DIGESTS.asc was made from the temp DIGESTS; its content is the same
            for tmp, _dst in staged:
                os.chmod(tmp, 0o644)
            for tmp, dst in staged:
                os.rename(tmp, dst)
            del staged[:]
        except OSError as exc:
            _cleanup(staged)
            del staged[:]
            where = getattr(exc, "filename", None) or (to_sign[0][0] if to_sign else "?")
            runner.fail("cannot write the signatures in %s: %s: make the directory writable and free space; nothing was signed"
                        % (os.path.dirname(where), exc.strerror or exc))


def _sign_staged(module, runner, gpg, fpr, primary, chosen, to_sign, result, staged):
    p = module.params
    tag = ".kiln-tmp-%d" % os.getpid()
    calls, jobs = [], []
    for f, _h, text, _reason in to_sign:
        df, _sigs = outputs_for(f, p["sign_digests_file"])
        tmp_df = df + tag
        staged.append((tmp_df, df))
        with open(tmp_df, "wb") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())  # a full disk shows here, not later in a signature of a truncated DIGESTS
        os.chmod(tmp_df, 0o644)
        sigs = [(tmp_df, df + ".asc", True), (f, f + ".sig", False)]
        if p["sign_digests_file"]:
            sigs.append((tmp_df, df + ".sig", False))
        for src, dst, clear in sigs:
            tmp = dst + tag
            staged.append((tmp, dst))
            call, status = gpg.sign_call(src, tmp, clearsign=clear, fpr=fpr, passphrase=p["passphrase"],
                                         digest_algo=p["digest_algo"])
            calls.append(call)
            jobs.append((f, status))
    # The signatures are independent: gpg runs for several at once (one per CPU), each through the agent.
    results = runner.run_all(calls, check=False)
    for (f, status), res in zip(jobs, results):
        ok, info = gpg.sign_outcome(res, status, p["passphrase"])
        if not ok:
            _cleanup(staged)
            del staged[:]
            runner.fail("signing %s with key %s failed: %s; nothing was signed" % (f, fpr, info["reason"]),
                        result=info["result"])
        if info["fingerprint"] not in (chosen["fingerprint"], primary):
            module.warn("gpg signed %s with %s, not the expected signing key %s" % (f, info["fingerprint"], chosen["fingerprint"]))
        result["signing_key_fingerprint"] = info["fingerprint"]


def _cleanup(staged):
    for tmp, _dst in staged:
        try:
            os.unlink(tmp)
        except OSError:
            pass


if __name__ == "__main__":
    main()
