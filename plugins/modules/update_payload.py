#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: update_payload
short_description: Produce signed Flatcar update payloads with core_sign_update and verify them
version_added: 0.1.0
description:
  - Builds C(flatcar_production_update.gz) from C(flatcar_production_update.bin) (or C(.bin.bz2)) and
    C(flatcar_production_image.vmlinuz), and C(oem-<id>.gz) / C(flatcar-<name>.gz) from the sysext C(.raw) files, by
    driving C(core_sign_update) and C(delta_generator) the way C(flatcar/scripts generate_payload) does.
  - The tools come from the build's C(flatcar_production_update.zip) bundle or from a directory holding them (an
    unpacked bundle, a flatcar/scripts checkout, or the SDK's scripts directory). The real C(core_sign_update) runs
    unchanged from a private copy laid out like the SDK's C(src/scripts), with C(common.sh), C(lib/shflags) and
    C(version.txt) where C(common.sh) looks for them; the C(settings.env) that C(common.sh) sources but the bundle
    does not ship is written empty (only comments).
  - Private keys are RSA PEM files or C(pkcs11:) URIs; only their paths or URIs reach the command line. A C(pin-value)
    inside a URI is refused; give O(pkcs11_pin) instead (written to a 0600 file in a private directory and referenced
    with C(pin-source=file:)).
  - Every payload is written under a temporary name, parsed and verified in Python against O(public_keys) (signature,
    blob hashes, and that the payload carries exactly the input image and kernel), and only then renamed into place.
    A payload that fails verification is never left as the output.
  - The payloads of one build are independent, so C(core_sign_update) runs for several of them at once (one per CPU;
    one at a time with a C(pkcs11:) key). The log shows each run as a whole, in payload order.
  - Records the payloads in the build record (stage C(payload)) with size, sha1 (base64) and sha256 (base64 and hex).
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
  build_dir:
    description:
      - Image output directory holding C(flatcar_production_update.bin), the kernel, the sysext C(.raw) files and the bundle.
      - Defaults to the record's C(build_dir) when a build record is given.
    type: path
  record_path:
    description: Build record; inputs must match their recorded sha256 and the payloads are recorded (stage C(payload)).
    type: path
  scripts_dir:
    description: Flatcar scripts checkout; with O(board) locates the build record.
    type: path
  image:
    description: The /usr image. Defaults to C(<build_dir>/flatcar_production_update.bin), else its C(.bz2).
    type: path
  kernel:
    description: The kernel. Defaults to C(<build_dir>/flatcar_production_image.vmlinuz).
    type: path
  main_payload:
    description: Build C(flatcar_production_update.gz).
    type: bool
    default: true
  extensions:
    description:
      - Sysext images to build payloads for. V(auto) takes every C(oem-*.raw) and C(flatcar-*.raw) in O(build_dir);
        an empty list builds none.
    type: list
    elements: str
    default: [auto]
  output_dir:
    description: Where the payloads go. Defaults to O(build_dir).
    type: path
  tools:
    description: Where C(core_sign_update) and C(delta_generator) come from.
    type: str
    choices: [bundle, directory]
    default: bundle
  generator_zip:
    description: The bundle for O(tools=bundle). Defaults to C(<build_dir>/flatcar_production_update.zip).
    type: path
  tools_dir:
    description:
      - For O(tools=directory) - where C(core_sign_update) sits beside C(common.sh) and C(lib/shflags/shflags) - an
        unpacked bundle (with C(version.txt)), a flatcar/scripts checkout (C(sdk_container/.repo/manifests/version.txt))
        or the SDK's C(/mnt/host/source/src/scripts) (C(../../.repo/manifests/version.txt)).
      - C(delta_generator) is taken from this directory when it is there, else from E(PATH) (the SDK's
        C(/usr/bin/delta_generator)).
    type: path
  private_keys:
    description: RSA private keys (PEM file paths or C(pkcs11:) URIs), one signature each.
    type: list
    elements: str
    required: true
  public_keys:
    description: The matching PEM public keys, same order; used by C(core_sign_update) and by kiln's own verification.
    type: list
    elements: path
    required: true
  pkcs11_pin:
    description: PIN for C(pkcs11:) keys.
    type: str
  force:
    description: Rebuild payloads even when existing ones are current and verify.
    type: bool
    default: false
  log_path:
    description:
      - Log of the tool runs. Defaults to C(logs/payload.log) next to the record, else C($TMPDIR/kiln-<uid>/update_payload.log).
      - Check mode writes no log.
    type: path
"""

EXAMPLES = r"""
- name: Sign update payloads on the signer host from the build's bundle
  kiln.flatcar.update_payload:
    record_path: /srv/signing/images/kiln/amd64-usr/4593.2.5/build-record.json
    private_keys: [/var/lib/kiln-signer/au/update-payload-key.key.pem]
    public_keys: [/var/lib/kiln-signer/au/update-payload-key.pub.pem]
  register: payloads
"""

RETURN = r"""
changed:
  description: Whether any payload was (or would be) built, or the record updated.
  returned: always
  type: bool
payloads:
  description: Each payload with the values Nebraska needs.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: Absolute path of the payload.
      type: str
    name:
      description: File name.
      type: str
    source:
      description: The image it carries.
      type: str
    action:
      description: V(built) or V(unchanged); in check mode V(build) or V(unchanged).
      type: str
    size:
      description: Size in bytes (in check mode only for an V(unchanged) payload, and so are the hashes).
      type: int
    sha1_base64:
      description: Base64 sha1.
      type: str
    sha256_base64:
      description: Base64 sha256.
      type: str
    sha256_hex:
      description: Hex sha256.
      type: str
    signature_count:
      description: Signatures in the payload.
      type: int
record_path:
  description: Build record used.
  returned: when a record is used
  type: str
log_path:
  description: Log of the tool runs.
  returned: always
  type: str
"""

import bz2
import glob
import hashlib
import os
import shutil
import stat
import tempfile
import zipfile

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule

from ansible_collections.kiln.flatcar.plugins.module_utils import _crau, _digests
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import board_args, record_args
from ansible_collections.kiln.flatcar.plugins.module_utils._artifacts import role_of
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import DEFAULT_PATH
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import LocateError, Stage, guarded, locate

STAGE = "payload"
TOOLS = ("core_sign_update", "delta_generator")
PAYLOAD_FIELDS = ("size", "sha1_base64", "sha256_base64", "sha256_hex", "signature_count")


def bz2_sha256(path):
    h = hashlib.sha256()
    size = 0
    with bz2.open(path, "rb") as fin:
        while True:
            block = fin.read(4 * 1024 * 1024)
            if not block:
                break
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def payload_name(raw):
    base = os.path.basename(raw)
    return base[:-len(".raw")] + ".gz"


# core_sign_update sources common.sh beside itself and exports GCLIENT_ROOT=<its dir>/../.. (flatcar/scripts
# core_sign_update:12-16); common.sh sources settings.env beside itself first (common.sh:6), sets
# SCRIPTS_DIR=$GCLIENT_ROOT/src/scripts (:310), loads version.txt from $GCLIENT_ROOT/.repo/manifests or from
# beside the script (:313-337, the update.zip case) and shflags from $SCRIPTS_DIR/lib/shflags or
# ./lib/shflags (:401-405). kiln therefore lays the tools out in a private tree <work>/gclient/src/scripts
# (the SDK's own layout, /mnt/host/source/src/scripts) so every one of those lookups lands inside it and
# nothing around the output directory (a stray .repo, .chromeos_dev or .default_board) is picked up.
SCRIPTS_REL = os.path.join("gclient", "src", "scripts")
SETTINGS_ENV = """# Written by kiln.flatcar.update_payload: build_library/generate_au_zip.py does not put settings.env into
# flatcar_production_update.zip (STATIC_FILES), but common.sh sources it first (common.sh:6). common.sh reads
# only SETTING_BINPKG_SERVER_* from it, for SDK download URLs that core_sign_update never uses.
"""


def unpack_bundle(runner, zip_path, work):
    """Unpack flatcar_production_update.zip into <work>/gclient/src/scripts; return (scripts_dir, path_dirs)."""
    dest = os.path.join(work, SCRIPTS_REL)
    os.makedirs(dest)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                name = os.path.normpath(info.filename)
                if name.startswith("..") or os.path.isabs(name):
                    runner.fail("%s holds an unsafe path %s" % (zip_path, info.filename))
                zf.extract(info, dest)
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(os.path.join(dest, name), mode)
    except (OSError, zipfile.BadZipfile) as exc:
        runner.fail("cannot unpack the update generator bundle %s: %s" % (zip_path, exc))
    for tool in TOOLS:
        path = os.path.join(dest, tool)
        if not os.path.isfile(path):
            runner.fail("%s has no %s: it is not a flatcar_production_update.zip bundle" % (zip_path, tool))
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    for rel in ("common.sh", os.path.join("lib", "shflags", "shflags"), "version.txt"):
        if not os.path.isfile(os.path.join(dest, rel)):
            runner.fail("%s has no %s, which core_sign_update needs: it is not a flatcar_production_update.zip bundle"
                        % (zip_path, rel))
    _settings_env(dest)
    return dest, [dest]


def _settings_env(scripts):
    path = os.path.join(scripts, "settings.env")
    if not os.path.isfile(path):
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(SETTINGS_ENV)


def lay_out_directory(runner, tools_dir, work):
    """Copy core_sign_update, common.sh, settings.env, lib/shflags and version.txt from an unpacked bundle, a
    flatcar/scripts checkout or the SDK's scripts directory into <work>/gclient/src/scripts; delta_generator
    stays where it is (beside them in a bundle, on PATH in the SDK). Return (scripts_dir, path_dirs)."""
    dest = os.path.join(work, SCRIPTS_REL)
    os.makedirs(os.path.join(dest, "lib"))
    for rel in ("core_sign_update", "common.sh", os.path.join("lib", "shflags", "shflags")):
        if not os.path.isfile(os.path.join(tools_dir, rel)):
            runner.fail("%s has no %s: give a directory where core_sign_update sits beside common.sh and lib/shflags "
                        "(an unpacked flatcar_production_update.zip, a flatcar/scripts checkout or the SDK's scripts)"
                        % (tools_dir, rel))
    try:
        for name in ("core_sign_update", "common.sh", "settings.env"):
            if os.path.isfile(os.path.join(tools_dir, name)):
                shutil.copy(os.path.join(tools_dir, name), os.path.join(dest, name))
        shutil.copytree(os.path.join(tools_dir, "lib", "shflags"), os.path.join(dest, "lib", "shflags"))
        os.chmod(os.path.join(dest, "core_sign_update"), 0o755)
        _settings_env(dest)
        # version.txt: beside the script in a bundle; sdk_container/.repo/manifests in a checkout (mounted as
        # /mnt/host/source/.repo in the SDK, i.e. ../../.repo/manifests from src/scripts)
        beside = os.path.join(tools_dir, "version.txt")
        manifests = [os.path.join(tools_dir, "sdk_container", ".repo", "manifests", "version.txt"),
                     os.path.join(tools_dir, os.pardir, os.pardir, ".repo", "manifests", "version.txt")]
        if os.path.isfile(beside):
            shutil.copy(beside, os.path.join(dest, "version.txt"))
        else:
            found = [m for m in manifests if os.path.isfile(m)]
            if not found:
                runner.fail("%s has no version.txt (beside core_sign_update, in sdk_container/.repo/manifests or "
                            "../../.repo/manifests): common.sh cannot run without it" % tools_dir)
            repo = os.path.join(work, "gclient", ".repo", "manifests")
            os.makedirs(repo)
            shutil.copy(found[0], os.path.join(repo, "version.txt"))
    except OSError as exc:
        runner.fail("cannot lay out the tools from %s: %s" % (tools_dir, exc))
    path_dirs = [dest]
    if os.access(os.path.join(tools_dir, "delta_generator"), os.X_OK):
        path_dirs.append(tools_dir)
    elif not shutil.which("delta_generator"):
        runner.fail("no delta_generator in %s or on PATH: run on the SDK, or point tools_dir at an unpacked "
                    "flatcar_production_update.zip" % tools_dir)
    return dest, path_dirs


def separator_for(keys):
    for sep in (":", "+", ",", ";", "|"):
        if not any(sep in k for k in keys):
            return sep
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            build_dir=dict(type="path"),
            scripts_dir=dict(type="path"),
            image=dict(type="path"),
            kernel=dict(type="path"),
            main_payload=dict(type="bool", default=True),
            extensions=dict(type="list", elements="str", default=["auto"]),
            output_dir=dict(type="path"),
            tools=dict(type="str", default="bundle", choices=["bundle", "directory"]),
            generator_zip=dict(type="path"),
            tools_dir=dict(type="path"),
            private_keys=dict(type="list", elements="str", required=True, no_log=False),  # key paths or pkcs11: URIs (PINs are refused here)
            public_keys=dict(type="list", elements="path", required=True),
            pkcs11_pin=dict(type="str", no_log=True),
            force=dict(type="bool", default=False),
            log_path=dict(type="path"),
            **dict(board_args(), **record_args())
        ),
        required_together=[("scripts_dir", "board")],
        mutually_exclusive=[("record_path", "scripts_dir")],
        required_if=[("tools", "directory", ("tools_dir",))],
        supports_check_mode=True,
    )
    guarded(module, lambda: _main(module))


def _main(module):
    p = module.params
    try:
        location = locate(p["record_path"], p["scripts_dir"], p["board"], build_root=p["build_root"])
    except LocateError as exc:
        module.fail_json(msg=str(exc))
    with Stage(module, STAGE, location, log_path=p["log_path"]) as stage:
        build_dir = p["build_dir"]
        if not build_dir and stage.record is not None and stage.record.data.get("build_dir"):
            build_dir = os.path.join(location.build_root, stage.record.data["build_dir"])
        if not build_dir:
            module.fail_json(msg="no build_dir given and no build record with a build_dir: set build_dir")
        _run(module, stage, stage.runner(), os.path.abspath(build_dir))


def load_public_keys(p, runner):
    """Check the key options; return [(path, public key)]."""
    if len(p["private_keys"]) != len(p["public_keys"]):
        runner.fail("%d private keys but %d public keys: give one public key per private key"
                    % (len(p["private_keys"]), len(p["public_keys"])))
    for key in p["private_keys"]:
        if key.startswith("pkcs11:"):
            if "pin-value=" in key:
                runner.fail("a pkcs11: URI carries pin-value, which would end up on a command line: remove it and set pkcs11_pin")
        elif key.startswith("fero:"):
            runner.fail("fero signing servers are not supported by kiln: use a key file or a pkcs11: URI")
        elif not os.path.isfile(key):
            runner.fail("private key %s does not exist" % key)
    pubkeys = []
    for path in p["public_keys"]:
        try:
            with open(path, "r", encoding="ascii", errors="replace") as fh:
                pubkeys.append((path, _crau.load_rsa_public_key(fh.read())))
        except (OSError, _crau.PayloadError) as exc:
            runner.fail("public key %s: %s" % (path, exc))
    return pubkeys


def plan_jobs(p, runner, build_dir):
    """What to build: [(payload name, image, kernel or None)]."""
    jobs = []
    if p["main_payload"]:
        image = p["image"] or os.path.join(build_dir, "flatcar_production_update.bin")
        if not p["image"] and not os.path.isfile(image) and os.path.isfile(image + ".bz2"):
            image += ".bz2"
        kernel = p["kernel"] or os.path.join(build_dir, "flatcar_production_image.vmlinuz")
        for f in (image, kernel):
            if not os.path.isfile(f):
                runner.fail("%s does not exist: build the image with extract_update (flatcar_production_update.bin) first" % f)
        jobs.append(("flatcar_production_update.gz", image, kernel))
    exts = p["extensions"]
    if exts == ["auto"]:
        exts = sorted(glob.glob(os.path.join(build_dir, "oem-*.raw")) + glob.glob(os.path.join(build_dir, "flatcar-*.raw")))
    for raw in exts:
        raw = raw if os.path.isabs(raw) else os.path.join(build_dir, raw)
        if not os.path.isfile(raw):
            runner.fail("sysext image %s does not exist" % raw)
        if not raw.endswith(".raw"):
            runner.fail("%s is not a sysext .raw image" % raw)
        jobs.append((payload_name(raw), raw, None))
    if not jobs:
        runner.fail("nothing to build: main_payload is false and no sysext .raw images were found")
    return jobs


def hash_inputs(stage, runner, jobs):
    """One pass over each input, checked against the build record: {path: hashes}."""
    recorded = _digests.recorded_files(stage.record.data) if stage.record is not None else None
    in_hashes = {}
    for _name, image, kernel in jobs:
        for f in (image, kernel):
            if not f or f in in_hashes:
                continue
            h = _digests.hash_file(f, ("sha256",))
            if f.endswith(".bz2"):
                h["raw_sha256"], h["raw_size"] = bz2_sha256(f)
            in_hashes[f] = h
            rec = recorded.get(stage.location.relative(f)) if recorded is not None else None
            if rec is not None and (rec.get("sha256") != h["sha256"] or rec.get("size") != h["size"]):
                runner.fail("%s no longer matches the build record (sha256 differs from stage %s): refusing to "
                            "build payloads from it" % (f, rec.get("stage")))
    return in_hashes


def _run(module, stage, runner, build_dir):
    p = module.params
    out_dir = os.path.abspath(p["output_dir"] or build_dir)
    pubkeys = load_public_keys(p, runner)
    jobs = plan_jobs(p, runner, build_dir)
    in_hashes = hash_inputs(stage, runner, jobs)
    plan = []
    for name, image, kernel in jobs:
        dest = os.path.join(out_dir, name)
        reason = "force" if p["force"] else _payload_current(dest, image, kernel, in_hashes, pubkeys)
        plan.append((name, image, kernel, dest, reason))
    inputs = {
        "stage": STAGE,
        "jobs": [[n, os.path.basename(i), in_hashes[i]["sha256"], k and in_hashes[k]["sha256"]] for n, i, k, _d, _r in plan],
        "public_keys": [_crau.key_fingerprint(k) for _l, k in pubkeys],
    }
    current, _why = stage.is_current(inputs)
    to_build = [x for x in plan if x[4]]
    result = stage.base_result()
    result["changed"] = bool(to_build) or (stage.record is not None and not current)
    if module.check_mode:
        result["payloads"] = [_planned(n, i, d, r, pubkeys) for n, i, _k, d, r in plan]
        module.exit_json(**result)
    if result["changed"]:
        stage.begin()
    if to_build:
        os.makedirs(out_dir, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".kiln-payload-", dir=out_dir)
        os.chmod(work, 0o700)
        try:
            _build(module, p, runner, to_build, work, in_hashes, pubkeys, build_dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    payloads = []
    outputs = []
    for name, image, kernel, dest, reason in plan:
        info = _crau.inspect(dest, pubkeys)
        payloads.append({"path": dest, "name": name, "source": image, "action": "built" if reason else "unchanged",
                         "reason": reason, "size": info["size"], "sha1_base64": info["sha1_base64"],
                         "sha256_base64": info["sha256_base64"], "sha256_hex": info["sha256_hex"],
                         "signature_count": info["signature_count"]})
        if stage.record is not None and stage.location.relative(dest):
            outputs.append(stage.describe(dest, role_of(dest), sha256=info["sha256_hex"]))
    result["payloads"] = payloads
    if stage.begun:
        stage.finish(outputs, details={
            "payloads": [dict((k, v) for k, v in pl.items() if k not in ("path", "action", "reason")) for pl in payloads],
            "public_keys": inputs["public_keys"],
        })
        if stage.record is not None:
            for pl in result["payloads"]:
                pl["source"] = stage.location.relative(pl["source"]) or pl["source"]
    module.exit_json(**result)


def _planned(name, image, dest, reason, pubkeys):
    """A check-mode entry; a current payload also gets its size and hashes (read only), as a real run returns them."""
    entry = {"path": dest, "name": name, "source": image, "action": "build" if reason else "unchanged", "reason": reason}
    if not reason:
        info = _crau.inspect(dest, pubkeys)
        entry.update((k, info[k]) for k in PAYLOAD_FIELDS)
    return entry


def _payload_current(dest, image, kernel, in_hashes, pubkeys):
    if not os.path.isfile(dest):
        return "missing"
    try:
        info = _crau.inspect(dest, pubkeys)
    except (OSError, _crau.PayloadError) as exc:
        return "existing payload is invalid: %s" % exc
    return _mismatch(info, image, kernel, in_hashes)


def _mismatch(info, image, kernel, in_hashes):
    """None when the payload verifies and carries exactly ``image`` (and ``kernel``), else why not."""
    if info["problems"]:
        return info["problems"][0]
    if not info["verified"]:
        return "payload does not verify with the public keys"
    npi = info["manifest"]["new_partition_info"] or {}
    raw_image = in_hashes[image].get("raw_sha256", in_hashes[image]["sha256"])
    raw_size = in_hashes[image].get("raw_size", in_hashes[image]["size"])
    if npi.get("sha256") != raw_image or npi.get("size") != raw_size:
        return "payload carries another image than %s" % os.path.basename(image)
    kernels = [pr for pr in info["manifest"]["procedures"] if pr["type"] == "KERNEL"]
    if kernel:
        if not kernels or (kernels[0]["new_info"] or {}).get("sha256") != in_hashes[kernel]["sha256"]:
            return "payload carries another kernel than %s" % os.path.basename(kernel)
    elif kernels:
        return "payload carries a kernel but should not"
    return None


def _build(module, p, runner, to_build, work, in_hashes, pubkeys, build_dir):
    if p["tools"] == "bundle":
        bundle = p["generator_zip"] or os.path.join(build_dir, "flatcar_production_update.zip")
        if not os.path.isfile(bundle):
            runner.fail("update generator bundle %s does not exist: build the image with extract_update, or use tools: directory" % bundle)
        scripts, path_dirs = unpack_bundle(runner, bundle, work)
    else:
        scripts, path_dirs = lay_out_directory(runner, os.path.abspath(p["tools_dir"]), work)
    keys = list(p["private_keys"])
    if p["pkcs11_pin"] is not None and any(k.startswith("pkcs11:") for k in keys):
        pin_file = os.path.join(work, "pkcs11.pin")
        fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(p["pkcs11_pin"])
        keys = [k + ("&" if "?" in k else "?") + "pin-source=file:" + pin_file if k.startswith("pkcs11:") else k for k in keys]
    sep = separator_for(keys + list(p["public_keys"]))
    if sep is None:
        runner.fail("every key separator character appears in a key path: rename the key files")
    env = {"PATH": os.pathsep.join(path_dirs + [os.environ.get("PATH", DEFAULT_PATH)])}
    calls = []
    for name, image, kernel, _dest, _reason in to_build:
        src = image
        if image.endswith(".bz2"):
            src = os.path.join(work, os.path.basename(image)[:-4])
            with bz2.open(image, "rb") as fin, open(src, "wb") as fout:
                shutil.copyfileobj(fin, fout, 4 * 1024 * 1024)
        jobdir = os.path.join(work, "job-" + name)  # core_sign_update writes its intermediate files into its cwd
        os.makedirs(jobdir)
        argv = [os.path.join(scripts, "core_sign_update"), "--image", src]
        if kernel:
            argv += ["--kernel", kernel]
        argv += ["--output", os.path.join(work, name), "--private_keys", sep.join(keys),
                 "--public_keys", sep.join(p["public_keys"]), "--keys_separator", sep]
        calls.append({"argv": argv, "env": env, "cwd": jobdir, "msg": "core_sign_update failed for %s: see the log" % name})
    # The payloads are independent (one directory each): core_sign_update runs for several at once, one per CPU.
    # Not with a pkcs11: key, whose token may not take two signing sessions at a time.
    runner.run_all(calls, workers=1 if any(k.startswith("pkcs11:") for k in keys) else None)
    for name, image, kernel, dest, _reason in to_build:
        tmp_out = os.path.join(work, name)
        if not os.path.isfile(tmp_out):
            runner.fail("core_sign_update finished but wrote no %s" % name)
        try:
            info = _crau.inspect(tmp_out, pubkeys)
        except _crau.PayloadError as exc:
            runner.fail("%s made by core_sign_update is not a valid payload (%s): it was not published" % (name, exc))
        why = _mismatch(info, image, kernel, in_hashes)
        if why:
            runner.fail("%s made by core_sign_update failed verification (%s): it was not published" % (name, why))
        final_tmp = dest + ".kiln-tmp-%d" % os.getpid()
        shutil.copyfile(tmp_out, final_tmp) if os.stat(tmp_out).st_dev != os.stat(os.path.dirname(dest)).st_dev \
            else os.rename(tmp_out, final_tmp)
        os.chmod(final_tmp, 0o644)
        os.rename(final_tmp, dest)
        runner.note("published %s (%d bytes, sha256 %s)" % (dest, info["size"], info["sha256_hex"]))


if __name__ == "__main__":
    main()
