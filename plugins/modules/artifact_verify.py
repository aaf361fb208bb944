#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_verify
short_description: Verify DIGESTS files and GnuPG signatures of build artifacts against one public key
version_added: 0.1.0
description:
  - Checks, for every selected file, that C(<file>.DIGESTS) matches the file (md5, sha1, sha512, computed in one
    read pass), that C(<file>.DIGESTS.asc) is a good clearsigned signature over that same DIGESTS text, that
    C(<file>.sig) is a good detached signature of the file, and (when present) that C(<file>.DIGESTS.sig) is good.
  - Only the given public key is trusted; it is imported into a temporary GnuPG home that is removed afterwards,
    the way C(flatcar-install) verifies images.
  - Fails at the first bad file, naming it.
  - With a build record (O(record_path), or O(scripts_dir) + O(board)) and neither O(files) nor O(directory), every
    output the record lists (except signatures) is verified. The record is only read, never locked or written.
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
    description: Artifacts to verify (not their signature files). Relative paths are relative to O(directory).
    type: list
    elements: path
  directory:
    description: Verify every artifact under this directory (files ending in C(.asc), C(.gpg), C(.sig), C(.DIGESTS) are the signatures).
    type: path
  record_path:
    description: Build record whose outputs are verified (when neither O(files) nor O(directory) is given).
    type: path
  scripts_dir:
    description: Flatcar scripts checkout; with O(board) locates the build record like the build modules do.
    type: path
  public_key:
    description: Armored (or binary) OpenPGP public key file to verify with.
    type: path
  public_key_content:
    description: The armored public key itself.
    type: str
  key_fingerprint:
    description: When set, the signatures must be made by this primary key (or one of its subkeys).
    type: str
  require:
    description: What each artifact must have.
    type: list
    elements: str
    choices: [digests, digests_asc, sig]
    default: [digests, digests_asc, sig]
  log_path:
    description:
      - Log file for the gpg runs. Defaults to C(artifact_verify.log) in the private directory C($TMPDIR/kiln-<uid>).
      - In check mode no log is written.
    type: path
"""

EXAMPLES = r"""
- name: Verify a downloaded kiln image like a user would
  kiln.flatcar.artifact_verify:
    files:
      - /srv/mirror/4593.2.5/flatcar_production_image.bin.bz2
    public_key: files/kiln-image-signing-key.asc

- name: Verify every signed output of a build record on the mirror
  kiln.flatcar.artifact_verify:
    record_path: /srv/mirror/images/kiln/amd64-usr/4593.2.5/build-record.json
    public_key: files/kiln-image-signing-key.asc
"""

RETURN = r"""
changed:
  description: Always false.
  returned: always
  type: bool
verified:
  description: Artifacts that passed, with what was checked.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: The artifact.
      type: str
    checked:
      description: Which of digests, digests_asc, sig, digests_sig were checked.
      type: list
      elements: str
    signer:
      description: Fingerprint of the key that made the signatures.
      type: str
key_fingerprints:
  description: Fingerprints of the imported public key(s).
  returned: success
  type: list
  elements: str
bad_file:
  description: The first file that failed.
  returned: failure
  type: str
log_path:
  description: Log of the gpg runs.
  returned: always
  type: str
record_path:
  description: Build record whose outputs were verified.
  returned: when a record is used
  type: str
"""

import os
import shutil
import tempfile

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _digests
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import board_args, record_args
from ansible_collections.kiln.flatcar.plugins.module_utils._artifacts import list_files
from ansible_collections.kiln.flatcar.plugins.module_utils._gpg import Gpg, GpgError, normalize_fingerprint
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import LocateError, Stage, guarded, locate


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="path"),
            directory=dict(type="path"),
            scripts_dir=dict(type="path"),
            public_key=dict(type="path"),
            public_key_content=dict(type="str"),
            key_fingerprint=dict(type="str", no_log=False),  # a public fingerprint, not a secret
            require=dict(type="list", elements="str", choices=["digests", "digests_asc", "sig"],
                         default=["digests", "digests_asc", "sig"]),
            log_path=dict(type="path"),
            **dict(board_args(), **record_args())
        ),
        required_one_of=[("public_key", "public_key_content"), ("files", "directory", "record_path", "scripts_dir")],
        required_together=[("scripts_dir", "board")],
        mutually_exclusive=[("public_key", "public_key_content"), ("record_path", "scripts_dir")],
        supports_check_mode=True,
    )
    guarded(module, lambda: _main(module))


def _main(module):
    p = module.params
    want = None
    try:
        if p["key_fingerprint"]:
            want = normalize_fingerprint(p["key_fingerprint"])
        location = locate(p["record_path"], p["scripts_dir"], p["board"], build_root=p["build_root"])
    except (GpgError, LocateError) as exc:
        module.fail_json(msg=str(exc))
    with Stage(module, None, location, writes=False, log_path=p["log_path"]) as stage:
        if p["files"]:
            files = [f if os.path.isabs(f) else os.path.join(p["directory"] or os.getcwd(), f) for f in p["files"]]
        elif p["directory"]:
            files = [f for f in list_files(p["directory"]) if _digests.is_signable(f)]
        else:
            files = [os.path.join(location.build_root, rel) for rel in sorted(_digests.recorded_files(stage.record.data))]
        if not files:
            module.fail_json(msg="no artifacts to verify")
        result = stage.base_result()
        runner = stage.runner()
        if module.get_bin_path("gpg") is None:
            runner.fail("gpg not found on this host: install gnupg")
        home = tempfile.mkdtemp(prefix="kiln-verify-")  # the only keyring: the given public key
        gpg = Gpg(runner, os.path.join(home, "gnupg"))
        try:
            os.makedirs(gpg.homedir, mode=0o700)
            _verify(module, p, runner, gpg, home, files, want, result)
        finally:
            gpg.kill_agent()
            gpg.close()
            shutil.rmtree(home, ignore_errors=True)


def _verify(module, p, runner, gpg, home, files, want, result):
    key_file = p["public_key"]
    if p["public_key_content"]:
        key_file = os.path.join(home, "key.asc")
        with open(key_file, "w", encoding="utf-8") as fh:
            fh.write(p["public_key_content"])
    elif not os.path.isfile(key_file):
        runner.fail("public key %s does not exist" % key_file)
    ok, fprs = gpg.import_keys(key_file)
    if not ok:
        runner.fail("could not import the public key from %s: is it an OpenPGP public key?" % (p["public_key"] or "public_key_content"))
    result["key_fingerprints"] = fprs
    if want and want not in fprs:
        runner.fail("the public key holds %s, not the expected key %s" % (", ".join(fprs), want))

    def bad(path, why):
        # each failure names the file and the reason in one line
        result["bad_file"] = path
        runner.fail("%s: %s" % (path, why), bad_file=path)

    verified = []
    for f in files:
        if not os.path.isfile(f):
            bad(f, "file is missing")
        checked = []
        signer = None
        df = _digests.digests_path(f)
        need = p["require"]
        hashes = None
        if os.path.isfile(df) or "digests" in need:
            if not os.path.isfile(df):
                bad(f, "%s is missing" % os.path.basename(df))
            hashes = _digests.hash_file(f, ("md5", "sha1", "sha512"))
            with open(df, "rb") as fh:
                text = fh.read()
            why = _digests.check(text, os.path.basename(f), hashes)
            if why:
                bad(f, "DIGESTS check failed: %s" % why)
            checked.append("digests")
        asc = df + ".asc"
        if os.path.isfile(asc) or "digests_asc" in need:
            if not os.path.isfile(asc):
                bad(f, "%s is missing" % os.path.basename(asc))
            info = gpg.verify(asc)
            if not info["valid"]:
                bad(f, "%s: %s" % (os.path.basename(asc), info["reason"]))
            with open(asc, "rb") as fh:
                clear = _digests.clearsigned_text(fh.read())
            if hashes is None:
                hashes = _digests.hash_file(f, ("md5", "sha1", "sha512"))
            why = _digests.check(clear or "", os.path.basename(f), hashes)
            if why:
                bad(f, "the signed DIGESTS in %s do not match the file: %s" % (os.path.basename(asc), why))
            signer = info["primary"]
            checked.append("digests_asc")
        sig = f + ".sig"
        if os.path.isfile(sig) or "sig" in need:
            if not os.path.isfile(sig):
                bad(f, "%s is missing" % os.path.basename(sig))
            info = gpg.verify(sig, f)
            if not info["valid"]:
                bad(f, "%s: %s" % (os.path.basename(sig), info["reason"]))
            signer = info["primary"]
            checked.append("sig")
        dsig = df + ".sig"
        if os.path.isfile(dsig) and os.path.isfile(df):
            info = gpg.verify(dsig, df)
            if not info["valid"]:
                bad(f, "%s: %s" % (os.path.basename(dsig), info["reason"]))
            checked.append("digests_sig")
        if not checked:
            bad(f, "no DIGESTS or signature to check")
        if want and signer and signer != want:
            bad(f, "signed by %s, not %s" % (signer, want))
        verified.append({"path": f, "checked": checked, "signer": signer})
    result["verified"] = verified
    module.exit_json(**result)


if __name__ == "__main__":
    main()
