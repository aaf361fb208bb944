# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The bad-input suite (issue 11): every module and every filter against a table of bad values and destination faults.

Each module case runs the module the way Ansible would, minus ansible-playbook: ``python -m
ansible_collections.kiln.flatcar.plugins.modules.<name> <args.json>`` with ``{"ANSIBLE_MODULE_ARGS": {...}}`` (AnsibleModule
in ansible-core 2.21 still reads that file; ``_ansible_check_mode`` for the check-mode variants), in a fresh directory
per case with HOME, TMPDIR and the working directory inside it. Cases run concurrently. For each case:

* the module failed with a one-line ``msg`` (or, for a value that is actually acceptable, succeeded);
  for an identifier-like option (version, board, URL, host, ref, ...) a hostile value must fail;
* no "Traceback" anywhere in stdout or stderr, and stdout is the module's JSON;
* nothing created, changed or removed outside the case's declared roots (its ``root/`` and the private log directory
  ``$TMPDIR/kiln-<uid>``, plus, for a path option, the path it names) -- the rest of the case directory (HOME, TMPDIR,
  the working directory) and the case's canary directory, which bad paths point at, are snapshotted around the run;
* no process left behind (found through /proc by the case's unique marker in the environment);
* in check mode nothing written anywhere, roots included.

A session summary line reports ``bad-input suite: N cases, 0 tracebacks, 0 writes outside roots, 0 check-mode writes``.
Read-only and full destinations need root (a private mount namespace); without root that subset is skipped.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kiln_testlib import fs_changes, fs_snapshot

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, "build", "collections")
PKG = "ansible_collections.kiln.flatcar.plugins.modules."
IS_ROOT = os.geteuid() == 0
HAS_UNSHARE = shutil.which("unshare") is not None
WORKERS = 3
CASE_TIMEOUT = 60
VERSION = "4593.2.5+kiln-1"
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
MARK = "KILN_BAD_INPUT_CASE"

# -- the table of bad values ---------------------------------------------------------------------------------------
# {root} is the case's own root, {canary} the case's canary directory (anything written there is a write outside
# the roots). Values marked hostile must be refused by identifier-like options.
HOSTILE = {
    "semicolon": "4593.2.5;touch${IFS}{canary}/pwned;true",
    "subst": "$(touch {canary}/pwned)",
    "backtick": "`touch {canary}/pwned`",
    "pipe": "a|touch {canary}/pwned",
    "amp": "a&touch {canary}/pwned&",
    "newline": "4593.2.5\nFLATCAR_VERSION=6666.6.6",
    "cr": "4593.2.5\rGROUP=evil",
    "nul": "4593.2.5\u0000x",
    "dotdot": "../../canary/victim",
    "option": "--upload-pack=touch {canary}/pwned;true",
    "unicode": "4593\u2024\u202e2.5",
    "long": "a" * 100000,
}
PATHLIKE = {
    "dotdot": "{root}/../../canary/victim",
    "relative_dotdot": "../canary/victim",
    "absolute_canary": "{canary}/victim",
    "nul": "{root}/a\u0000b",
    "newline": "{root}/a\nb",
    "long": "{root}/" + "d" * 5000,
}
NUMBERS = {"huge": 10 ** 12, "minus_one": -1, "zero": 0}
WRONG_TYPES = {"list": ["a", "b"], "dict": {"a": 1}, "bool": True, "float": 1.5, "empty": ""}

# -- the modules ----------------------------------------------------------------------------------------------------
# base: arguments a careful user could pass (files inside {root}, hosts on 127.0.0.1 port 1, no network beyond it).
# kinds: option -> "id" (hostile values must fail), "path", "int", "text", "list", "url" (like id).
RECORD = "{root}/build/kiln/amd64-usr/%s/build-record.json" % VERSION
SSH = {"ssh_port": 1, "ssh_extra_args": ["-oConnectTimeout=2", "-oBatchMode=yes"]}
SDK = {"scripts_dir": "{root}/scripts", "board": "amd64-usr", "container_name": "kiln-bad-input-none"}
MODULES = {
    "artifact_sign": ({"files": ["{root}/a.bin"], "key_fingerprint": FPR, "gnupghome": "{root}/gnupg", "log_path": "{root}/sign.log"},
                      {"key_fingerprint": "id", "files": "list", "gnupghome": "path", "directory": "path", "record_path": "path",
                       "passphrase": "text", "expire_warn_days": "int", "log_path": "path", "board": "id"}),
    "artifact_transfer": (dict(SSH, build_root="{root}/build", board="amd64-usr", version=VERSION, dest_host="127.0.0.1",
                               dest_build_root="/srv/kiln-bad-input", log_path="{root}/t.log"),
                          {"dest_host": "id", "dest_build_root": "id", "version": "id", "board": "id", "ssh_user": "id",
                           "stages": "list", "ssh_port": "int", "build_root": "path", "record_path": "path", "log_path": "path"}),
    "artifact_verify": ({"files": ["{root}/a.bin"], "log_path": "{root}/v.log"},
                        {"files": "list", "directory": "path", "public_key": "path", "public_key_content": "text",
                         "key_fingerprint": "id", "record_path": "path", "log_path": "path"}),
    "binpkg_cache": ({"mode": "pull", "board": "amd64-usr", "version": VERSION, "cache_url": "http://127.0.0.1:1/cache",
                      "container_name": "kiln-bad-input-none", "staging_dir": "{root}/staging", "timeout": 2, "log_path": "{root}/c.log"},
                     {"version": "id", "board": "id", "cache_url": "url", "container_name": "id", "cache_host": "id",
                      "cache_root": "id", "ssh_user": "id", "timeout": "int", "staging_dir": "path", "log_path": "path"}),
    "boot_check": ({"image": "{root}/disk.img", "firmware": "bios", "timeout": 5, "work_dir": "{root}/work",
                    "cache_dir": "{root}/cache", "console_log": "{root}/console.log", "accel": "tcg"},
                   {"image": "path", "timeout": "int", "memory": "int", "cpus": "int", "extra_args": "list", "console_log": "path",
                    "work_dir": "path", "cache_dir": "path", "record_path": "path", "board": "id", "lock_wait": "int"}),
    "build_lock": ({"dir": "{root}/locks", "board": "amd64-usr", "version": VERSION, "owner": "bad-input"},
                   {"dir": "path", "version": "id", "board": "id", "owner": "text", "ttl": "int"}),
    "gpg_key": ({"gnupghome": "{root}/gnupg", "fingerprint": FPR, "require_secret": False, "log_path": "{root}/g.log"},
                {"gnupghome": "path", "fingerprint": "id", "private_key": "text", "public_key_path": "path",
                 "public_key_mode": "text", "log_path": "path"}),
    "host_preflight": ({"path": "{root}", "programs": ["sh"], "binfmt_mount": False},
                       {"programs": "list", "path": "path", "min_free_gb": "int", "min_mem_gb": "int",
                        "binfmt_interpreter": "path", "binfmt_misc_dir": "path"}),
    "host_state": ({"name": "cache", "inputs": {"packages": ["nginx"]}, "dir": "{root}/state", "state": "recorded"},
                   {"name": "id", "dir": "path", "inputs": "text", "max_age": "int"}),
    "hotfix_plan": ({"release": "4593.2.5", "board": "amd64-usr", "build_root": "{root}/build"},
                    {"release": "id", "board": "id", "build_root": "path", "known_versions": "list"}),
    "image": (dict(SDK), {"group": "id", "scripts_dir": "path", "board": "id", "base_pkg": "text", "disk_layout": "text",
                          "getbinpkgver": "text", "devcontainer_binhost": "text", "min_free_gb": "int", "container_name": "id",
                          "image_types": "list", "sdk_registry": "id"}),
    "kola": ({"image": "{root}/img.bin", "output_dir": "{root}/kola", "board": "amd64-usr", "kola": "{root}/kola-bin",
              "timeout": 5},
             {"image": "path", "output_dir": "path", "tests": "list", "parallel": "int", "timeout": "int", "version": "id",
              "extra_args": "list", "tapfile": "path", "junit": "path", "kola": "path"}),
    "nebraska_package": ({"url": "http://127.0.0.1:1", "version": VERSION, "arch": "amd64", "package_url": "http://127.0.0.1:1/u/",
                          "payload_path": "{root}/flatcar_production_update.gz", "timeout": 2},
                         {"url": "url", "version": "id", "package_url": "url", "filename": "id", "payload_path": "path",
                          "channel": "id", "app_id": "id", "timeout": "int", "record_path": "path", "extra_files": "list"}),
    "packages": (dict(SDK), {"packages": "list", "binhost": "list", "getbinpkgver": "text", "min_free_gb": "int",
                             "scripts_dir": "path", "board": "id", "container_name": "id", "rebuild_atoms": "list",
                             "sdk_registry": "id"}),
    "payload_info": ({"path": "{root}/flatcar_production_update.gz"},
                     {"path": "path", "public_keys": "list", "public_key_contents": "list"}),
    "publish": ({"backend": "dir", "base": "{root}/mirror", "record_path": RECORD, "require_boot_check": False,
                 "require_signatures": False},
                {"base": "path", "record_path": "path", "board": "id", "version": "id", "target_name": "id", "stages": "list",
                 "mirror_host": "id", "ssh_user": "id", "rsync_path": "id", "public_url": "url", "signing_key": "path",
                 "update_base": "path"}),
    "rollback_record": ({"record_path": RECORD, "target": "stable", "to_version": "4593.2.5", "reason": "test"},
                        {"record_path": "path", "target": "id", "to_version": "id", "reason": "text", "requested_by": "id"}),
    "sdk_checkout": ({"scripts_dir": "{root}/scripts", "ref": "stable-4593.2.5", "repo": "file:///nonexistent/kiln-bad-input.git"},
                     {"scripts_dir": "path", "ref": "id", "repo": "id", "upstream_repo": "id", "version": "id", "build_id": "id",
                      "binhost": "url", "sdk_version": "id", "board": "id", "patches": "list", "mods": "list",
                      "rebuild_since": "id"}),
    "sdk_image": ({"sdk_version": "4593.2.5", "source": "cache", "cache": "http://127.0.0.1:1/sdk", "download_dir": "{root}/dl",
                   "timeout": 2},
                  {"sdk_version": "id", "cache": "url", "download_dir": "path", "timeout": "int", "scripts_dir": "path",
                   "sdk_registry": "id"}),
    "sysext": (dict(SDK, name="kiln-bad"), {"name": "id", "packages": "list", "metapkgs": "text", "output_dir": "path",
                                            "squashfs_base": "path", "manglefs_script": "text", "board": "id",
                                            "sdk_registry": "id"}),
    "update_payload": ({"build_dir": "{root}/build/images/amd64-usr/x", "private_keys": ["{root}/k.pem"],
                        "public_keys": ["{root}/k.pub"], "output_dir": "{root}/out", "log_path": "{root}/u.log"},
                       {"build_dir": "path", "output_dir": "path", "private_keys": "list", "public_keys": "list",
                        "pkcs11_pin": "text", "extensions": "list", "image": "path", "log_path": "path"}),
    "vm_image": (dict(SDK, formats=["qemu_uefi"]), {"formats": "list", "disk_layout": "text", "mem": "text", "scripts_dir": "path",
                                                    "board": "id", "sdk_registry": "id"}),
}
STRICT = ("id", "url")
GNUPG_MODULES = ("artifact_sign", "artifact_verify", "gpg_key")
# values every option is tried with; the others rotate over the options (1 in SPREAD)
CORE = ("hostile_semicolon", "path_dotdot", "num_huge", "list_semicolon")
SPREAD = 18
CHECK_OPTIONS = 3


def values_for(kind):
    """(label, value, must_fail) for one option kind."""
    out = []
    if kind in ("id", "url", "text"):
        out += [("hostile_" + k, v, kind in STRICT and k != "long") for k, v in HOSTILE.items()]
        out += [("long", HOSTILE["long"], kind in STRICT)]
    if kind == "path":
        out += [("path_" + k, v, False) for k, v in PATHLIKE.items()]
        out += [("hostile_" + k, HOSTILE[k], False) for k in ("semicolon", "subst", "newline", "nul")]
    if kind == "int":
        out += [("num_" + k, v, False) for k, v in NUMBERS.items()] + [("num_string", "abc", True)]
    if kind == "list":
        out += [("list_" + k, [v], False) for k, v in HOSTILE.items() if k in ("semicolon", "subst", "newline", "nul", "dotdot", "option")]
        out += [("list_qemu_gdb", ["-gdb", "tcp::1234"], False), ("list_qemu_s", ["-s"], False),
                ("list_path_dotdot", [PATHLIKE["dotdot"]], False), ("list_of_dict", [{"a": 1}], False)]
    out += [("type_" + k, v, kind in STRICT and k != "empty") for k, v in WRONG_TYPES.items() if not (kind == "int" and k == "bool")]
    seen = set()
    return [x for x in out if not (x[0] in seen or seen.add(x[0]))]


# -- fixtures inside a case -----------------------------------------------------------------------------------------

def prepare(root):
    """Files a module may be pointed at: an unsigned blob, a record, a not-a-payload, an empty scripts dir."""
    os.makedirs(os.path.join(root, "scripts"))
    os.makedirs(os.path.join(root, "build", "images", "amd64-usr", "x"))
    with open(os.path.join(root, "a.bin"), "wb") as fh:
        fh.write(b"blob" * 64)
    with open(os.path.join(root, "flatcar_production_update.gz"), "wb") as fh:
        fh.write(b"CrAU\x00\x00\x00\x00\x00\x00\x00\x02" + b"\xff" * 64)
    for name in ("k.pem", "k.pub", "disk.img", "img.bin"):
        with open(os.path.join(root, name), "wb") as fh:
            fh.write(b"not really\n")


def fill(value, ctx):
    if isinstance(value, str):
        return value.replace("{root}", ctx["root"]).replace("{canary}", ctx["canary"])
    if isinstance(value, list):
        return [fill(v, ctx) for v in value]
    if isinstance(value, dict):
        return dict((k, fill(v, ctx)) for k, v in value.items())
    return value


class Case:
    def __init__(self, module, label, args, must_fail=False, check=False, setup=None, fault=None, fault_dir=None, path_option=None):
        self.module, self.label, self.args, self.must_fail = module, label, args, must_fail
        self.check, self.setup, self.fault, self.fault_dir = check, setup, fault, fault_dir
        # a path option names its own destination: what it points at is a declared root (outside check mode)
        self.path_option = path_option

    @property
    def id(self):
        return "%s-%s%s" % (self.module, self.label, "-check" if self.check else "")


def build_cases():
    cases = []
    for module, (base, kinds) in sorted(MODULES.items()):
        cases.append(Case(module, "base", dict(base)))
        cases.append(Case(module, "base", dict(base), check=True))
        for n, (option, kind) in enumerate(sorted(kinds.items())):
            # every option gets its kind's core value; the rest of the table rotates over the options (1 in SPREAD),
            # so each module still meets every class of value
            for i, (label, value, must_fail) in enumerate(values_for(kind)):
                if label in CORE or (i + n) % SPREAD == 0 or (kind in STRICT and label == "hostile_newline"):
                    cases.append(Case(module, "%s=%s" % (option, label), dict(base, **{option: value}), must_fail,
                                      path_option=option if kind in ("path", "list") else None))
            # check-mode variants of the core value for the first options: nothing may be written at all
            if n < CHECK_OPTIONS:
                for label, value, must_fail in values_for(kind):
                    if label in CORE:
                        cases.append(Case(module, "%s=%s" % (option, label), dict(base, **{option: value}), must_fail, check=True))
    cases += fault_cases()
    return cases


def _file_at(rel):
    def setup(root):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write("a file where a directory is expected\n")
    return setup


def _record(content):
    def setup(root):
        path = fill(RECORD, {"root": root, "canary": ""})
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(content)
    return setup


def _fifo(rel):
    def setup(root):
        os.mkfifo(os.path.join(root, rel))
    return setup


def _good_record_bytes(**edits):
    stage = {"status": "passed", "outputs": [{"path": "images/amd64-usr/x/flatcar_production_image.bin", "role": "generic_image",
                                              "size": 1, "sha256": "0" * 64}]}
    data = {"schema_version": 1, "kind": "kiln.flatcar/build-record", "board": "amd64-usr", "arch": "amd64",
            "version": {"FLATCAR_VERSION": VERSION}, "stage_order": ["image"], "stages": {"image": stage}}
    data.update(edits)
    return json.dumps(data).encode()


# destinations: (module, option, relative directory inside root the module writes to)
DESTINATIONS = [
    ("build_lock", "dir", "locks"), ("artifact_sign", "gnupghome", "gnupg"), ("sdk_checkout", "scripts_dir", "scripts2"),
    ("boot_check", "work_dir", "work"), ("kola", "output_dir", "kola"), ("update_payload", "output_dir", "out"),
    ("publish", "base", "mirror"), ("sdk_image", "download_dir", "dl"), ("gpg_key", "gnupghome", "gnupg"),
    ("binpkg_cache", "staging_dir", "staging"),
]
RECORD_MODULES = ["artifact_sign", "artifact_verify", "artifact_transfer", "boot_check", "publish", "nebraska_package",
                  "update_payload", "rollback_record"]
BAD_RECORDS = {
    "truncated": _good_record_bytes()[:57],
    "not_json": b"\xff\xfe\x00garbage",
    "empty": b"",
    "list": b"[]",
    "deep": b"[" * 100000,
    "board_dotdot": _good_record_bytes(board="../../x"),
    "path_dotdot": _good_record_bytes(stages={"image": {"status": "passed", "outputs": [
        {"path": "../../../canary/victim", "role": "generic_image", "size": 1, "sha256": "0" * 64}]}}),
    "path_absolute": _good_record_bytes(stages={"image": {"status": "passed", "outputs": [
        {"path": "/etc/hostname", "role": "generic_image", "size": 1, "sha256": "0" * 64}]}}),
    "no_size": _good_record_bytes(stages={"image": {"status": "passed", "outputs": [
        {"path": "images/a", "role": "generic_image", "sha256": "0" * 64}]}}),
    "stages_null": _good_record_bytes(stages=None),
    "version_shell": _good_record_bytes(version={"FLATCAR_VERSION": "4593.2.5;id"}),
}


BAD_MOD_VALUES = [
    ("sdk_checkout", "mods", "kind", [{"kind": "rpm"}]),
    ("sdk_checkout", "mods", "not_dict", ["CONFIG_X=y"]),
    ("sdk_checkout", "mods", "src_dotdot", [{"kind": "ebuild", "src": "{root}/../../canary", "category": "app-misc"}]),
    ("sdk_checkout", "mods", "src_relative", [{"kind": "ebuild", "src": "../canary", "category": "app-misc"}]),
    ("sdk_checkout", "mods", "category_dotdot", [{"kind": "ebuild", "src": "{root}/scripts", "category": ".."}]),
    ("sdk_checkout", "mods", "patch_missing", [{"kind": "patch", "src": "{root}/x.patch", "package": "app-misc/jq"}]),
    ("sdk_checkout", "mods", "patch_package_hostile", [{"kind": "patch", "src": "{root}/a.bin", "package": "a/b;id"}]),
    ("sdk_checkout", "mods", "kernel_newline", [{"kind": "kernel_config", "options": ["CONFIG_X=y\nCONFIG_Y=y"]}]),
    ("sdk_checkout", "mods", "kernel_subst", [{"kind": "kernel_config", "options": ['CONFIG_X="$(touch {canary}/pwned)"x']}]),
    ("sdk_checkout", "mods", "use_subst", [{"kind": "use", "entries": ["net-misc/curl $(touch {canary}/pwned)"]}]),
    ("sdk_checkout", "mods", "keywords_option", [{"kind": "accept_keywords", "entries": ["--config=x ~amd64"]}]),
    ("sdk_checkout", "mods", "mask_unknown_key", [{"kind": "mask", "entries": ["app-misc/jq"], "src": "/etc"}]),
    ("sdk_checkout", "mods", "files_dest_etc", [{"kind": "files", "src": "{root}/scripts", "dest": "/etc/systemd/system",
                                                 "name": "acme", "image": True}]),
    ("sdk_checkout", "mods", "files_dest_dotdot", [{"kind": "files", "src": "{root}/scripts", "dest": "/usr/share/../../etc",
                                                    "name": "acme", "image": True}]),
    ("sdk_checkout", "mods", "files_dest_subst", [{"kind": "files", "src": "{root}/scripts", "dest": "/usr/share/$(touch {canary}/pwned)",
                                                   "name": "acme", "image": True}]),
    ("sdk_checkout", "mods", "files_name_hostile", [{"kind": "files", "src": "{root}/scripts", "dest": "/usr/share/acme",
                                                     "name": "x;touch {canary}/pwned", "image": True}]),
    ("sdk_checkout", "mods", "files_neither", [{"kind": "files", "src": "{root}/scripts", "dest": "/usr/share/acme", "name": "acme"}]),
    ("packages", "rebuild_atoms", "semicolon", ["app-misc/jq;touch {canary}/pwned"]),
    ("packages", "rebuild_atoms", "option", ["--usepkg"]),
    ("packages", "rebuild_atoms", "space", ["app-misc/jq app-misc/curl"]),
]


def fault_cases():
    cases = []
    for module, option, rel in DESTINATIONS:
        base = MODULES[module][0]
        args = dict(base, **{option: "{root}/" + rel})
        cases.append(Case(module, "%s=file" % option, args, True, setup=_file_at(rel)))
        cases.append(Case(module, "%s=file" % option, args, True, check=True, setup=_file_at(rel)))
        for fault in ("readonly", "full"):
            cases.append(Case(module, "%s=%s" % (option, fault), args, False, fault=fault, fault_dir=rel))
    for m, module in enumerate(RECORD_MODULES):
        base = MODULES[module][0]
        for r, (label, content) in enumerate(sorted(BAD_RECORDS.items())):
            if (r + m) % 2:
                continue  # each bad record meets half of the modules that read records (rotating)
            args = dict(base, record_path=RECORD)
            if module == "artifact_transfer":
                args.pop("build_root", None)
            cases.append(Case(module, "record_%s" % label, args, True, setup=_record(content)))
        cases.append(Case(module, "record_fifo", dict(base, record_path=RECORD), True,
                          setup=lambda root: (os.makedirs(os.path.dirname(fill(RECORD, {"root": root, "canary": ""}))),
                                              os.mkfifo(fill(RECORD, {"root": root, "canary": ""})))))
    for label, extra in (("gdb", ["-gdb", "tcp::1234"]), ("s", ["-s"]), ("qmp_pretty", ["-qmp-pretty", "tcp:127.0.0.1:1,server"]),
                         ("vnc", ["-display", "vnc=:1"]), ("monitor", ["-monitor", "tcp:127.0.0.1:1,server"])):
        cases.append(Case("boot_check", "extra_args=qemu_%s" % label, dict(MODULES["boot_check"][0], extra_args=extra), True))
    # mods and rebuild atoms (issue 12): every bad one is refused, in check mode too, before anything is touched
    for module, option, label, value in BAD_MOD_VALUES:
        for check in (False, True):
            cases.append(Case(module, "%s=%s" % (option, label), dict(MODULES[module][0], **{option: value}), True, check=check))
    cases.append(Case("payload_info", "path=fifo", {"path": "{root}/p.fifo"}, True, setup=_fifo("p.fifo")))
    cases.append(Case("payload_info", "path=dir", {"path": "{root}/scripts"}, True))
    return cases


CASES = build_cases()


# -- running one case -----------------------------------------------------------------------------------------------

def _procs_with(marker):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _fault_wrapper(case, root):
    """argv prefix running the module in a private mount namespace with its destination read-only or full."""
    target = os.path.join(root, case.fault_dir)
    os.makedirs(target, exist_ok=True)
    if case.fault == "readonly":
        script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'
    else:
        script = ('mount -t tmpfs -o size=64k kiln-full "$1" && (head -c 1000000 /dev/zero > "$1/fill" 2>/dev/null; true) '
                  '&& shift && exec "$@"')
    return ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", script, "sh", target]


def _strings(value):
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [x for v in value for x in _strings(v)]
    return [str(value)] if isinstance(value, (int, float)) else []


def run_case(case, suite_dir):
    """Layout: <d>/canary (what bad paths point at), <d>/box/{root,home,tmp,cwd}; the whole of <d> is snapshotted."""
    d = tempfile.mkdtemp(prefix="case-", dir=suite_dir)
    canary = os.path.join(d, "canary")
    os.makedirs(os.path.join(canary, "victim"))
    with open(os.path.join(canary, "victim", "keep"), "w") as fh:
        fh.write("must survive\n")
    home, tmp, cwd, root = (os.path.join(d, "box", x) for x in ("home", "tmp", "cwd", "root"))
    for x in (home, tmp, cwd):
        os.makedirs(x)
    os.makedirs(root)
    prepare(root)
    if case.setup:
        case.setup(root)
    args = fill(case.args, {"root": root, "canary": canary})
    args.update(_ansible_check_mode=case.check, _ansible_module_name="kiln.flatcar." + case.module, _ansible_no_log=False)
    args_file = os.path.join(d, "args.json")
    with open(args_file, "w") as fh:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, fh)
    marker = "%s=%s" % (MARK, d)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "TMPDIR": tmp, "LANG": "C.UTF-8",
           "PYTHONPATH": COLLECTIONS, "PYTHONDONTWRITEBYTECODE": "1", MARK: d}
    argv = [sys.executable, "-m", PKG + case.module, args_file]
    if case.fault:
        argv = _fault_wrapper(case, root) + argv
    before = fs_snapshot([d])
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=CASE_TIMEOUT)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        hung = True
    elapsed = time.monotonic() - started
    time.sleep(0.05)
    left = _procs_with(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    after = fs_snapshot([d])
    # TMPDIR's own mtime moves when a tool makes and removes scratch files there; what is left in it still counts
    changes = [p for p in fs_changes(before, after) if p != tmp]
    declared = [root, os.path.join(tmp, "kiln-%d" % os.getuid())]
    if case.module in GNUPG_MODULES:
        declared.append(os.path.join(home, ".gnupg"))  # gpg's default home (gnupghome unset or empty) is the keyring kiln uses
    if case.path_option:
        declared += [os.path.normpath(os.path.join(cwd, v)) for v in _strings(args.get(case.path_option)) if v and "\0" not in v]
    if not case.check:
        changes = [p for p in changes if not any(p == r or p.startswith(r + os.sep) for r in declared)
                   # directories above a declared root: made (or their mtime moved) when the module makes that root
                   and not (os.path.isdir(p) and any(r.startswith(p + os.sep) for r in declared))]
    problems = []
    out_s, err_s = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if hung:
        problems.append("hung for %ds" % CASE_TIMEOUT)
    if "Traceback" in out_s or "Traceback" in err_s:
        problems.append("traceback")
    result = None
    lines = [x for x in out_s.splitlines() if x.strip().startswith("{")]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        problems.append("no JSON result")
    if isinstance(result, dict):
        failed = bool(result.get("failed"))
        msg = result.get("msg")
        if failed and (not isinstance(msg, str) or not msg.strip() or "\n" in msg or "\r" in msg):
            problems.append("msg is not one line: %r" % (msg if not isinstance(msg, str) else msg[:300]))
        if "exception" in result:
            problems.append("result carries an exception")
        if case.must_fail and not failed:
            problems.append("accepted a bad value")
    if changes:
        problems.append(("check-mode writes: %s" if case.check else "writes outside roots: %s")
                        % ", ".join(os.path.relpath(p, d) for p in changes[:5]))
    if left:
        problems.append("processes left: %s" % left)
    outcome = {"id": case.id, "problems": problems, "elapsed": elapsed, "traceback": "traceback" in problems,
               "outside": bool(changes) and not case.check, "check_writes": bool(changes) and case.check,
               "msg": (result or {}).get("msg") if isinstance(result, dict) else None,
               "stderr": err_s[-600:] if problems else ""}
    if not problems:
        shutil.rmtree(d, ignore_errors=True)
    return outcome


# -- the session: all cases at once, then one test per case reads its outcome ----------------------------------------

@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    if not os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "kiln", "flatcar")):
        pytest.skip("run `make collection-path` first")
    base = tempfile.mkdtemp(prefix="kiln-bad-input-")
    runnable = [c for c in CASES if not c.fault or (IS_ROOT and HAS_UNSHARE)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = dict((c.id, r) for c, r in zip(runnable, pool.map(lambda c: run_case(c, base), runnable)))
    total = time.monotonic() - started
    tracebacks = sum(1 for r in results.values() if r["traceback"])
    outside = sum(1 for r in results.values() if r["outside"])
    check_writes = sum(1 for r in results.values() if r["check_writes"])
    other = sum(1 for r in results.values() if r["problems"] and not (r["traceback"] or r["outside"] or r["check_writes"]))
    line = ("bad-input suite: %d cases, %d tracebacks, %d writes outside roots, %d check-mode writes (%d with other "
            "problems; %.0fs)" % (len(results), tracebacks, outside, check_writes, other, total))
    yield {"results": results, "line": line, "base": base}
    sys.stdout.write("\n" + line + "\n")
    with open(os.path.join(tempfile.gettempdir(), "kiln-bad-input-summary.txt"), "w") as fh:
        fh.write(line + "\n")
        for r in results.values():
            if r["problems"]:
                fh.write("%s: %s | msg=%r | stderr=%r\n" % (r["id"], "; ".join(r["problems"]), r["msg"], r["stderr"][-300:]))
    shutil.rmtree(base, ignore_errors=True)


def test_case_table_covers_every_module_and_is_large():
    # a module file that only documents an action plugin (kiln.flatcar.async_wait) runs on the controller, not here
    modules = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules")) if f.endswith(".py") and f != "__init__.py"
                     and not os.path.exists(os.path.join(REPO, "plugins", "action", f)))
    assert sorted(MODULES) == modules
    assert len(CASES) >= 300
    assert sum(1 for c in CASES if c.check) >= 60


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(outcomes, case):
    if case.fault and not (IS_ROOT and HAS_UNSHARE):
        pytest.skip("read-only/full destinations need root and unshare")
    result = outcomes["results"][case.id]
    why = "; ".join(result["problems"])
    assert not result["problems"], "%s: %s (msg=%r, stderr=%r)" % (case.id, why, result["msg"], result["stderr"][-400:])


def test_summary_line(outcomes):
    print(outcomes["line"])
    assert outcomes["line"].startswith("bad-input suite: %d cases, 0 tracebacks, 0 writes outside roots, 0 check-mode writes"
                                       % len(outcomes["results"])), outcomes["line"]


# -- filters, in process --------------------------------------------------------------------------------------------

def _filters():
    from ansible_collections.kiln.flatcar.plugins.filter import kiln_summary, query, update_conf
    out = {}
    for mod in (kiln_summary, query, update_conf):
        out.update(mod.FilterModule().filters())
    return out


FILTER_VALUES = [HOSTILE[k] for k in sorted(HOSTILE)] + [
    None, 10 ** 12, -1, 0, 1.5, True, [], {}, ["a"], {"a": [1]}, "", "http://h/\nGROUP=evil", "http://h/\u2028REBOOT_STRATEGY=off"]
FILTER_CALLS = {
    "update_conf": [("server",), ("server", "group"), ("server", "group", "machine_alias"), ("server", "group", "reboot_strategy")],
    "update_conf_ignition": [("server",), ("server", "group")],
    "update_conf_butane": [("server",), ("server", "group")],
    "query": [("data", "expression")],
    "kiln_summary_rows": [("rows", "hostvars")],
    "kiln_summary_markdown": [("summary",)],
}
GOOD = {"server": "https://update.example/v1/update/", "group": "stable", "machine_alias": None, "reboot_strategy": None,
        "data": {"a": 1}, "expression": "a", "rows": [], "hostvars": {}, "summary": {}}


def filter_cases():
    cases = []
    for name, signatures in sorted(FILTER_CALLS.items()):
        for params in signatures:
            for bad_param in params:
                for i, value in enumerate(FILTER_VALUES):
                    cases.append((name, params, bad_param, value, "%s-%s-%d" % (name, bad_param, i)))
    return cases


FILTER_CASES = filter_cases()


@pytest.mark.parametrize("name, params, bad_param, value, label", FILTER_CASES, ids=[c[-1] for c in FILTER_CASES])
def test_filter_bad_input(name, params, bad_param, value, label):
    from ansible.errors import AnsibleError
    func = _filters()[name]
    args = [value if p == bad_param else GOOD[p] for p in params]
    try:
        out = func(*args)
    except AnsibleError as exc:
        assert "\n" not in str(exc.message if hasattr(exc, "message") else exc), (label, str(exc))
        return
    if name.startswith("update_conf"):
        text = out if isinstance(out, str) else json.dumps(out)
        if isinstance(value, str) and any(c in value for c in "\n\r\0\u2028\u202e"):
            raise AssertionError("%s accepted %r: %r" % (label, value, text[:200]))
        for key in ("GROUP=evil", "REBOOT_STRATEGY=off"):
            assert ("\n" + key) not in text and ("\\n" + key) not in text, (label, text[:300])
