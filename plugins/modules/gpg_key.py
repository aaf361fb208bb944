#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: gpg_key
short_description: Make a signing key present in a GnuPG home and export its public key
version_added: 0.2.0
description:
  - Makes sure the GnuPG home O(gnupghome) holds the secret key with the full fingerprint O(fingerprint).
    When it does not (or with O(reimport=true)), the armored secret key O(private_key) is imported; the key
    material goes to C(gpg --import) on stdin and never appears on a command line, in a log or in the result.
  - Fails with one line when the key is still not there afterwards (wrong key material, or no O(private_key)
    for a key that is not present).
  - With O(public_key_path), writes the armored public key there (atomically, only when its content differs),
    for C(kiln.flatcar.artifact_verify) and for users.
  - Idempotent; C(changed) only when keys were imported (new key, new subkeys, signatures or secret parts) or the
    public key file was written.
  - In check mode the GnuPG home is copied to a private temporary directory and every gpg command runs against the
    copy, so the prediction is exact and the real home is not touched (gpg writes lock files and starts an agent
    even to list keys).
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
options:
  gnupghome:
    description: The GnuPG home. Created C(0700) when missing.
    type: path
    required: true
  fingerprint:
    description: Full fingerprint (40 or 64 hex digits) of the key. Short ids and user ids are refused.
    type: str
    required: true
  private_key:
    description:
      - Armored secret key (C(-----BEGIN PGP PRIVATE KEY BLOCK-----)), normally from an ansible-vault encrypted
        variable. Fed to gpg on stdin; never logged.
      - Leave unset when the key is already in O(gnupghome) (imported by hand, or a smartcard stub).
    type: str
  reimport:
    description: Import O(private_key) even when the secret key is present (for example to add new subkeys).
    type: bool
    default: false
  require_secret:
    description: Require the secret part. V(false) only needs the public key (to export it from a verifying host).
    type: bool
    default: true
  public_key_path:
    description: Write the armored public key of O(fingerprint) to this file.
    type: path
  public_key_mode:
    description: Mode of O(public_key_path).
    type: str
    default: "0644"
  log_path:
    description: Log of the gpg runs (never holds key material). Default C(<tmp>/kiln-<uid>/gpg_key.log); check mode logs to the private copy.
    type: path
notes:
  - After an import the home's gpg-agent is stopped, so the next signing run starts with the current keys.
"""

EXAMPLES = r"""
- name: Put the image signing key into the signer's GnuPG home
  kiln.flatcar.gpg_key:
    gnupghome: /var/lib/kiln-signer/gnupg
    fingerprint: "{{ signer_key_fingerprint }}"
    private_key: "{{ signer_private_key }}"   # ansible-vault encrypted
    public_key_path: /var/lib/kiln-signer/image-signing-key.asc

- name: Export the public key of a key that is already present
  kiln.flatcar.gpg_key:
    gnupghome: /var/lib/kiln-signer/gnupg
    fingerprint: 0C6105F749980D39A0C14AB7F3C7F7C2A82F2475
    public_key_path: /srv/flatcar-mirror/image-signing-key.asc
  register: signing_key
"""

RETURN = r"""
changed:
  description: Whether keys were imported or the public key file written (in check mode, would be).
  returned: always
  type: bool
fingerprint:
  description: The normalised full fingerprint of the primary key.
  returned: success
  type: str
  sample: 0C6105F749980D39A0C14AB7F3C7F7C2A82F2475
secret:
  description: Whether the secret part is in the home after the task.
  returned: success
  type: bool
imported:
  description: Whether the import changed the keyring (new key, subkeys, signatures or secret parts).
  returned: success
  type: bool
uids:
  description: User ids of the key.
  returned: success
  type: list
  elements: str
expires:
  description: Expiry of the primary key (ISO date) or V(never).
  returned: success
  type: str
public_key_path:
  description: Where the armored public key was written.
  returned: when O(public_key_path) is set
  type: str
public_key_written:
  description: Whether O(public_key_path) was (or in check mode would be) written.
  returned: when O(public_key_path) is set
  type: bool
log_path:
  description: Log of the gpg runs.
  returned: always
  type: str
"""

import os
import shutil
import tempfile
import time

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils._gpg import Gpg, GpgError, normalize_fingerprint, read_status
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import Runner
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import guarded
from ansible_collections.kiln.flatcar.plugins.module_utils._version import atomic_write

# Files of a GnuPG home worth copying for a check-mode dry run (sockets, locks and caches are not).
_SKIP = ("S.", ".#lk", "random_seed")


def copy_home(src, dst):
    """Copy the key material of a GnuPG home into ``dst`` (0700) for a dry run."""
    os.makedirs(dst, mode=0o700, exist_ok=True)
    if not os.path.isdir(src):
        return
    for dirpath, dirnames, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        target = dst if rel == "." else os.path.join(dst, rel)
        os.makedirs(target, mode=0o700, exist_ok=True)
        for name in files:
            if name.startswith(_SKIP) or name.endswith(".lock"):
                continue
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                shutil.copy2(full, os.path.join(target, name))
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]


def import_secret(gpg, data):
    """Import armored key material from stdin; returns (ok, changed, fingerprints)."""
    status = gpg._status_path()  # pylint: disable=protected-access
    argv = gpg.base() + ["--status-file", status, "--pinentry-mode", "loopback", "--import"]
    result = gpg.runner.run(argv, env=gpg.env(), data=data.encode("utf-8") + b"\n", check=False)
    st = read_status(status)
    fprs = [s[2] for s in st if s[0] == "IMPORT_OK" and len(s) >= 3]
    changed = False
    for s in st:
        if s[0] == "IMPORT_RES" and len(s) >= 12:
            counts = [int(x) if x.isdigit() else 0 for x in s[1:]]
            # imported, n_uids, n_subk, n_sigs, n_revoc, sec_imported
            changed = any(counts[i] for i in (2, 5, 6, 7, 8, 10))
    return result.rc == 0 and bool(fprs), changed, fprs, result


def export_public(runner, gpg, fpr, dest, mode, check_mode):
    """Write the armored public key of ``fpr`` to ``dest`` with ``mode``; whether it (or its mode) changed."""
    rc, armored, err = runner.capture(gpg.base() + ["--armor", "--export", "--", fpr], env=gpg.env())
    if rc != 0 or "PUBLIC KEY BLOCK" not in armored:
        detail = (err or "").strip().splitlines()
        runner.fail("gpg --export %s failed with rc=%d: %s" % (fpr, rc, detail[-1] if detail else "no public key block"))
    try:
        with open(dest, "r", encoding="utf-8") as fh:
            current = fh.read()
        current_mode = os.stat(dest).st_mode & 0o7777
    except OSError:
        current, current_mode = None, None
    write = current != armored or current_mode != mode
    if write and not check_mode:
        if current != armored:
            atomic_write(dest, armored, mode=mode)
        else:
            os.chmod(dest, mode)
    return write


def main():
    module = AnsibleModule(
        argument_spec=dict(
            gnupghome=dict(type="path", required=True),
            fingerprint=dict(type="str", required=True),
            private_key=dict(type="str", no_log=True),
            reimport=dict(type="bool", default=False),
            require_secret=dict(type="bool", default=True),
            public_key_path=dict(type="path"),
            public_key_mode=dict(type="str", default="0644"),
            log_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    guarded(module, lambda: _main(module))


def _main(module):
    p = module.params
    try:
        fpr = normalize_fingerprint(p["fingerprint"])
    except GpgError as exc:
        module.fail_json(msg=str(exc))
    try:
        mode = int(p["public_key_mode"], 8)
    except ValueError:
        module.fail_json(msg="public_key_mode %r is not an octal mode such as 0644" % p["public_key_mode"])
    if p["private_key"] is not None and "PRIVATE KEY BLOCK" not in p["private_key"]:
        module.fail_json(msg="private_key is not an armored secret key (no -----BEGIN PGP PRIVATE KEY BLOCK-----): "
                             "export it with gpg --armor --export-secret-keys")

    home = p["gnupghome"]
    scratch = tempfile.mkdtemp(prefix="kiln-gk-")  # short: gpg-agent's socket path must fit
    os.chmod(scratch, 0o700)
    if module.check_mode:
        work_home = os.path.join(scratch, "h")
        copy_home(home, work_home)
        log_path = os.path.join(scratch, "gpg_key.log")
    else:
        work_home = home
        if p["log_path"]:
            log_path = p["log_path"]
        else:
            base = os.path.join(tempfile.gettempdir(), "kiln-%d" % os.getuid())
            os.makedirs(base, mode=0o700, exist_ok=True)
            log_path = os.path.join(base, "gpg_key.log")
    result = dict(changed=False, log_path=log_path)
    runner = Runner(module, log_path=log_path, fail_extra=dict(result))
    gpg = None
    try:
        if not module.check_mode and not os.path.isdir(home):
            os.makedirs(home, mode=0o700)
            result["changed"] = True
        gpg = Gpg(runner, homedir=work_home)
        key = gpg.list_key(fpr, secret=True)
        has_secret = key is not None
        imported = False
        if p["private_key"] is not None and (not has_secret or p["reimport"]):
            ok, changed, fprs, res = import_secret(gpg, p["private_key"])
            if not ok:
                runner.fail("gpg --import of private_key failed (rc=%d): is it an armored OpenPGP secret key?" % res.rc, result=res)
            imported = changed
            if changed and not module.check_mode:
                gpg.kill_agent()
            key = gpg.list_key(fpr, secret=True)
            if key is None:
                runner.fail("private_key does not hold the secret key %s (it holds %s): give the key of signer_key_fingerprint"
                            % (fpr, ", ".join(sorted(set(fprs))) or "no key"))
            has_secret = True
        if key is None:
            public = gpg.list_key(fpr, secret=False)
            if p["require_secret"] or public is None:
                runner.fail("%s key %s is not in %s: give private_key (the armored secret key) or import it by hand"
                            % ("secret" if p["require_secret"] else "public", fpr, home))
            key = public
        result.update(fingerprint=key["fingerprint"], secret=has_secret, imported=imported, uids=key.get("uids", []),
                      expires=time.strftime("%Y-%m-%d", time.gmtime(key["expires"])) if key.get("expires") else "never")
        result["changed"] = result["changed"] or imported

        if p["public_key_path"]:
            write = export_public(runner, gpg, fpr, p["public_key_path"], mode, module.check_mode)
            result.update(public_key_path=p["public_key_path"], public_key_written=write)
            result["changed"] = result["changed"] or write
    finally:
        if gpg is not None:
            if module.check_mode:
                gpg.kill_agent()
            gpg.close()
        shutil.rmtree(scratch, ignore_errors=True)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
