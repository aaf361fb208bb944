# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""The SDK contract: what a flatcar/scripts checkout accepts, read from the scripts themselves.

One parser, used by ``hack/sdk-contract.py`` (writes ``tests/sdk_contract/<major>.json``), by the unit
tests that check every argv kiln builds, and by the preflight every SDK stage runs on the builder
against the checkout at the pinned ref. It reads, without running anything:

* shflags flags of each SDK script: ``DEFINE_<type> <name> <default> ...`` lines up to the script's
  ``FLAGS "$@"``, including the files it sources before that and the hidden flags defined after
  ``show_help_if_requested``;
* ``run_sdk_container``'s options (its ``case "$1" in`` loop, or a ``getopts`` spec);
* the environment that crosses into the container: the ``setup_sdk_env`` loop in
  ``sdk_lib/sdk_container_common.sh`` (written to ``sdk_container/.sdkenv``) and the sudo
  ``env_keep`` list in ``sdk_lib/90_env_keep``;
* image types ``build_image`` accepts (its ``case "${arg}" in``), ``VALID_IMG_TYPES`` of
  ``image_to_vm.sh``, the compression formats of ``compress_file`` and the standard output names.

Only the standard library: this file is also loaded by path from ``hack/sdk-contract.py``.
"""

from __future__ import annotations

import os
import re
import shlex

SCHEMA_VERSION = 1
RUNNER = "run_sdk_container"
SDK_SCRIPTS = ("setup_board", "build_packages", "set_official", "build_image", "image_to_vm.sh", "build_sysext")
VERSIONFILE = os.path.join("sdk_container", ".repo", "manifests", "version.txt")
SDK_COMMON = os.path.join("sdk_lib", "sdk_container_common.sh")
ENV_KEEP = os.path.join("sdk_lib", "90_env_keep")
VM_UTIL = os.path.join("build_library", "vm_image_util.sh")
RELEASE_UTIL = os.path.join("build_library", "release_util.sh")

_DEFINE_RE = re.compile(r"^\s*DEFINE_(boolean|string|integer|float)\s+(.*)$")
_DEFINE_LOOSE_RE = re.compile(r"^\s*DEFINE_(boolean|string|integer|float)\s+['\"]?([A-Za-z0-9_]+)")
_FLAGS_PARSE_RE = re.compile(r"^\s*FLAGS\s+\"\$@\"")
_HELP_RE = re.compile(r"^\s*show_help_if_requested\b")
_SOURCE_RE = re.compile(r"^\s*(?:\.|source)\s+(\"[^\"]+\"|'[^']+'|\S+)")
_CASE_ITEM_RE = re.compile(r"^\s*\(?\s*((?:\"[^\"]*\"|'[^']*'|[^\s()|;]+)(?:\s*\|\s*(?:\"[^\"]*\"|'[^']*'|[^\s()|;]+))*)\s*\)(.*)$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = ("${FLAGS_TRUE}", "$FLAGS_TRUE", "true", "0")
_FALSE = ("${FLAGS_FALSE}", "$FLAGS_FALSE", "false", "1")


class ContractError(Exception):
    pass


def _read(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def logical_lines(text):
    """(line number, line) with backslash continuations joined and comment lines dropped."""
    out = []
    buf = ""
    start = 0
    for num, raw in enumerate(text.splitlines(), 1):
        if not buf and raw.lstrip().startswith("#"):
            continue
        if not buf:
            start = num
        if raw.endswith("\\") and not raw.endswith("\\\\"):
            buf += raw[:-1] + " "
            continue
        out.append((start, buf + raw))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def read_versionfile(scripts_dir):
    """The KEY=value pairs of sdk_container/.repo/manifests/version.txt ({} when absent)."""
    text = _read(os.path.join(scripts_dir, VERSIONFILE)) or ""
    values = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2).strip().strip("\"'")
    return values


def release_line(version):
    """'4799' from '4799.0.0+nightly-...' (the major version names a release line)."""
    m = re.match(r"^(?:[a-z]+-)?(\d+)\.\d+\.\d+", version or "")
    if not m:
        raise ContractError("cannot tell the release line of version %r" % (version,))
    return m.group(1)


def _resolve_source(scripts_dir, word):
    """Path of a sourced file inside the checkout, or None when it cannot be resolved statically."""
    path = word.strip("\"'")
    for var, value in (("${BUILD_LIBRARY_DIR}", "build_library"), ("$BUILD_LIBRARY_DIR", "build_library"),
                       ("${SCRIPT_ROOT}", "."), ("$SCRIPT_ROOT", "."), ("$(dirname \"$0\")", "."), ("$(dirname $0)", "."),
                       ("${SCRIPTS_DIR}", "."), ("$SCRIPTS_DIR", "."), ("${SRC_ROOT}/scripts", ".")):
        if path.startswith(var):
            path = value + path[len(var):]
            break
    if "$" in path or "`" in path or os.path.isabs(path):
        return None
    root = os.path.normpath(scripts_dir)
    full = os.path.normpath(os.path.join(root, path))
    if not full.startswith(root + os.sep) or not os.path.isfile(full):
        return None
    return full


def _bool_default(word):
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return word


def _parse_define(kind, rest):
    """(name, record) of one DEFINE_ line's arguments, or None."""
    try:
        words = shlex.split(rest, comments=False, posix=True)
    except ValueError:
        words = None
    if not words:
        return None
    name = words[0]
    if not _NAME_RE.match(name):
        return None
    record = {"type": kind}
    default = words[1] if len(words) > 1 else None
    record["default"] = _bool_default(default) if kind == "boolean" else default
    if len(words) > 3 and re.match(r"^[A-Za-z]$", words[3]):
        record["short"] = words[3]
    return name, record


def _scan_flags(scripts_dir, path, flags, seen, hidden, main, rel):
    text = _read(path)
    if text is None:
        return False
    for _num, line in logical_lines(text):
        if main and _FLAGS_PARSE_RE.match(line):
            return True
        if main and _HELP_RE.match(line):
            hidden = True
            continue
        m = _DEFINE_RE.match(line)
        if m:
            parsed = _parse_define(m.group(1), m.group(2))
            if parsed is None:
                loose = _DEFINE_LOOSE_RE.match(line)
                parsed = (loose.group(2), {"type": loose.group(1), "default": None}) if loose else None
            if parsed:
                name, record = parsed
                record["hidden"] = hidden
                if not main:
                    record["defined_in"] = rel
                flags[name] = record
            continue
        s = _SOURCE_RE.match(line)
        if s:
            target = _resolve_source(scripts_dir, s.group(1))
            if target and target not in seen:
                seen.add(target)
                _scan_flags(scripts_dir, target, flags, seen, hidden, False, os.path.relpath(target, scripts_dir))
    return False


def parse_script_flags(scripts_dir, script):
    """{flag: {type, default, hidden[, short][, defined_in]}} of an shflags script, None when it is absent."""
    path = os.path.join(scripts_dir, script)
    if not os.path.isfile(path):
        return None
    flags = {}
    _scan_flags(scripts_dir, path, flags, set([path]), False, True, script)
    return dict(sorted(flags.items()))


def _case_blocks(lines, head_re):
    """Lists of (patterns, body) for each ``case`` whose header matches head_re."""
    blocks = []
    current = None
    for _num, line in lines:
        if current is None:
            if head_re.search(line):
                current = []
            continue
        if re.match(r"^\s*esac\b", line):
            blocks.append(current)
            current = None
            continue
        m = _CASE_ITEM_RE.match(line)
        if m:
            pats = [p.strip().strip("\"'") for p in m.group(1).split("|")]
            current.append((pats, m.group(2)))
    return blocks


def parse_run_sdk_container(scripts_dir):
    """{option: {"value": bool}} of run_sdk_container (None when the script is absent)."""
    text = _read(os.path.join(scripts_dir, RUNNER))
    if text is None:
        return None
    lines = logical_lines(text)
    options = {}
    for block in _case_blocks(lines, re.compile(r"\bcase\s+\"?\$\{?1\}?\"?\s+in\b")):
        for pats, body in block:
            for pat in pats:
                if pat.startswith("-") and pat not in ("-*", "--*"):
                    options[pat] = {"value": bool(re.search(r"\$\{?2\b", body))}
    for _num, line in lines:
        m = re.search(r"\bgetopts\s+[\"']?:?([A-Za-z:]+)[\"']?", line)
        if m:
            spec = m.group(1)
            for i, ch in enumerate(spec):
                if ch != ":":
                    options["-" + ch] = {"value": spec[i + 1:i + 2] == ":"}
    return dict(sorted(options.items()))


def _array(text, name):
    """Words of a bash array assignment ``name=( ... )`` (comments dropped), or None."""
    m = re.search(r"(?m)^\s*(?:declare\s+-a\s+|local\s+|readonly\s+)?" + re.escape(name) + r"=\(", text)
    if not m:
        return None
    words = []
    for line in text[m.end():].splitlines():
        line = line.split("#", 1)[0]
        end = line.find(")")
        part = line if end < 0 else line[:end]
        words.extend(w.strip("\"'") for w in part.split())
        if end >= 0:
            break
    return words


def _function_body(text, name):
    m = re.search(r"(?m)^\s*(?:function\s+)?" + re.escape(name) + r"\s*\(\)\s*\{?\s*$", text)
    if not m:
        return None
    end = re.search(r"(?m)^\}", text[m.end():])
    return text[m.end():m.end() + end.start()] if end else text[m.end():]


def parse_environment(scripts_dir):
    """{"sdkenv": [...], "env_keep": [...]}: variables written to sdk_container/.sdkenv and kept by sudo."""
    result = {"sdkenv": None, "env_keep": None}
    text = _read(os.path.join(scripts_dir, SDK_COMMON))
    if text is not None:
        body = _function_body(text, "setup_sdk_env")
        if body is not None:
            for _num, line in logical_lines(body):
                m = re.match(r"^\s*for\s+var\s+in\s+(.*?);\s*do\b", line) or re.match(r"^\s*for\s+var\s+in\s+(.*)$", line)
                if not m:
                    continue
                names = []
                for word in m.group(1).split():
                    ref = re.match(r"^\"?\$\{([A-Za-z_][A-Za-z0-9_]*)\[@\]\}\"?$", word)
                    if ref:
                        names.extend(_array(body, ref.group(1)) or _array(text, ref.group(1)) or [])
                    elif _NAME_RE.match(word):
                        names.append(word)
                result["sdkenv"] = sorted(set(names))
                break
    text = _read(os.path.join(scripts_dir, ENV_KEEP))
    if text is not None:
        names = []
        for _num, line in logical_lines(text):
            m = re.match(r"^\s*Defaults\s+env_keep\s*\+?=\s*\"([^\"]*)\"", line)
            if m:
                names.extend(w for w in m.group(1).split() if _NAME_RE.match(w))
        result["env_keep"] = sorted(set(names))
    return result


def parse_image_types(scripts_dir):
    """Positional image types build_image accepts (its ``case "${arg}" in``), None when absent."""
    text = _read(os.path.join(scripts_dir, "build_image"))
    if text is None:
        return None
    types = []
    for block in _case_blocks(logical_lines(text), re.compile(r"\bcase\s+\"?\$\{?arg\}?\"?\s+in\b")):
        for pats, _body in block:
            types.extend(p for p in pats if _NAME_RE.match(p))
    return sorted(set(types)) if types else None


def _sourced_files(scripts_dir, script):
    path = os.path.join(scripts_dir, script)
    found = []
    for _num, line in logical_lines(_read(path) or ""):
        s = _SOURCE_RE.match(line)
        if s:
            target = _resolve_source(scripts_dir, s.group(1))
            if target and target not in found:
                found.append(target)
    return found


def parse_vm_formats(scripts_dir):
    """``VALID_IMG_TYPES`` as image_to_vm.sh sees it, None when not found."""
    candidates = [os.path.join(scripts_dir, VM_UTIL)] + _sourced_files(scripts_dir, "image_to_vm.sh")
    for path in candidates:
        words = _array(_read(path) or "", "VALID_IMG_TYPES")
        if words:
            return sorted(set(words))
    return None


def parse_compression_formats(scripts_dir):
    """Formats ``compress_file`` in build_library/release_util.sh handles (None when not found)."""
    candidates = [os.path.join(scripts_dir, RELEASE_UTIL), os.path.join(scripts_dir, "common.sh")]
    for path in candidates:
        body = _function_body(_read(path) or "", "compress_file")
        if body is None:
            continue
        found = []
        for block in _case_blocks(logical_lines(body), re.compile(r"\bcase\s+\"?\$\{?compression_format\}?\"?\s+in\b")):
            for pats, _body in block:
                found.extend(p for p in pats if p and _NAME_RE.match(p))
        if found:
            return sorted(set(found))
    return None


def parse_outputs(scripts_dir):
    """Standard output names: the FLATCAR_*_NAME constants of common.sh and the image files the
    build_library utils derive from flatcar_production_image.bin."""
    consts = {}
    for _num, line in logical_lines(_read(os.path.join(scripts_dir, "common.sh")) or ""):
        m = re.match(r"^\s*(FLATCAR_[A-Z_]+)=[\"']?(flatcar_[A-Za-z0-9_.-]+)[\"']?\s*$", line)
        if m:
            consts[m.group(1)] = m.group(2)
    image = consts.get("FLATCAR_PRODUCTION_IMAGE_NAME", "flatcar_production_image.bin")
    files = set(v for v in consts.values())
    libdir = os.path.join(scripts_dir, "build_library")
    try:
        names = sorted(n for n in os.listdir(libdir) if n.endswith("_util.sh"))
    except OSError:
        names = []
    for name in names:
        text = _read(os.path.join(libdir, name)) or ""
        for strip, suffix in re.findall(r"\$\{image_name%(\.bin|_image\.bin)\}([A-Za-z0-9_.-]*[A-Za-z0-9])", text):
            if image.endswith(strip):
                files.add(image[:-len(strip)] + suffix)
        for literal in re.findall(r"[\"'/](flatcar_[a-z0-9_]+\.(?:bin|gz|zip|squashfs|raw|txt|json|vmlinuz))[\"']", text):
            files.add(literal)
    return {"constants": dict(sorted(consts.items())), "image_files": sorted(files)}


def build_contract(scripts_dir):
    """The whole contract of one checkout, as written to tests/sdk_contract/<major>.json."""
    scripts_dir = os.path.abspath(scripts_dir)
    if not os.path.isfile(os.path.join(scripts_dir, RUNNER)):
        raise ContractError("%s is not a flatcar/scripts checkout (no %s)" % (scripts_dir, RUNNER))
    version = read_versionfile(scripts_dir)
    scripts = {}
    for script in SDK_SCRIPTS:
        flags = parse_script_flags(scripts_dir, script)
        if flags is not None:
            scripts[script] = {"flags": flags}
    return {
        "schema": SCHEMA_VERSION,
        "version": {k: version.get(k, "") for k in ("FLATCAR_VERSION", "FLATCAR_VERSION_ID", "FLATCAR_BUILD_ID", "FLATCAR_SDK_VERSION")},
        "run_sdk_container": {"options": parse_run_sdk_container(scripts_dir)},
        "scripts": scripts,
        "environment": parse_environment(scripts_dir),
        "image_types": parse_image_types(scripts_dir),
        "vm_formats": parse_vm_formats(scripts_dir),
        "compression_formats": parse_compression_formats(scripts_dir),
        "outputs": parse_outputs(scripts_dir),
    }


class ContractData:
    """A contract as data (a tests/sdk_contract/<major>.json document)."""

    def __init__(self, data):
        self.data = data

    def flags(self, script):
        entry = self.data.get("scripts", {}).get(script)
        return None if entry is None else entry.get("flags", {})

    def sdk_options(self):
        return self.data.get("run_sdk_container", {}).get("options")

    def environment(self):
        return self.data.get("environment") or {"sdkenv": None, "env_keep": None}

    def image_types(self):
        return self.data.get("image_types")

    def vm_formats(self):
        return self.data.get("vm_formats")

    def compression_formats(self):
        return self.data.get("compression_formats")


class ScriptsContract(ContractData):
    """The contract of a checkout, parsed lazily; the cache lives as long as this object (one stage run)."""

    def __init__(self, scripts_dir):
        super().__init__({})
        self.scripts_dir = os.path.abspath(scripts_dir)
        self._cache = {}

    def _get(self, key, func, *args):
        if key not in self._cache:
            self._cache[key] = func(self.scripts_dir, *args)
        return self._cache[key]

    def flags(self, script):
        return self._get(("flags", script), parse_script_flags, script)

    def sdk_options(self):
        return self._get("options", parse_run_sdk_container)

    def environment(self):
        return self._get("environment", parse_environment)

    def image_types(self):
        return self._get("image_types", parse_image_types)

    def vm_formats(self):
        return self._get("vm_formats", parse_vm_formats)

    def compression_formats(self):
        return self._get("compression_formats", parse_compression_formats)


def _flag_problems(contract, script, args):
    """Problems with the flags in args (the words after the script name) and the positionals."""
    problems = []
    flags = contract.flags(script)
    if flags is None:
        return [script], []
    positionals = []
    ended = False
    for arg in args:
        if ended or not arg.startswith("--"):
            positionals.append(arg)
            continue
        if arg == "--":
            ended = True
            continue
        name, eq, value = arg[2:].partition("=")
        spec = flags.get(name)
        if spec is None and not eq and name.startswith("no") and (flags.get(name[2:]) or {}).get("type") == "boolean":
            continue
        if spec is None:
            problems.append("%s --%s" % (script, name))
        elif spec["type"] == "boolean" and eq:
            problems.append("%s --%s as a string (it is a boolean flag: --%s/--no%s)" % (script, name, name, name))
        elif spec["type"] != "boolean" and not eq:
            problems.append("%s --%s as a switch (it takes a %s value)" % (script, name, spec["type"]))
        elif spec["type"] == "integer" and not re.match(r"^-?\d+$", value):
            problems.append("%s --%s=%s (it takes an integer)" % (script, name, value))
        elif spec["type"] == "float" and not re.match(r"^-?\d+(\.\d+)?$", value):
            problems.append("%s --%s=%s (it takes a number)" % (script, name, value))
        elif name == "image_compression_formats":
            known = contract.compression_formats()
            for comp in value.split(","):
                if known is not None and comp not in known:
                    problems.append("%s compression format %s" % (script, comp))
        elif script == "image_to_vm.sh" and name == "format":
            known = contract.vm_formats()
            if known is not None and value not in known:
                problems.append("image_to_vm.sh format %s" % value)
    return problems, positionals


def command_problems(contract, argv):
    """What in one full SDK argv (``./run_sdk_container ... -- [sudo] ./<script> ...``) the contract lacks.

    Each problem is a short phrase that fits 'scripts at <ref> have no <problem>'."""
    argv = list(argv)
    problems = []
    if argv and os.path.basename(argv[0]) == RUNNER:
        options = contract.sdk_options()
        i = 1
        while i < len(argv):
            opt = argv[i]
            if options is not None and opt not in options:
                problems.append("%s %s" % (RUNNER, opt))
            if opt == "--":
                i += 1
                break
            if not opt.startswith("-"):
                break
            i += 2 if options is not None and (options.get(opt) or {}).get("value") else 1
        argv = argv[i:]
    if argv and argv[0] == "sudo":
        argv = argv[1:]
        while argv and argv[0].startswith("-"):
            argv = argv[1:]
    if not argv:
        return problems
    script = os.path.basename(argv[0])
    more, positionals = _flag_problems(contract, script, argv[1:])
    problems.extend(more)
    if script == "build_image":
        known = contract.image_types()
        for kind in positionals:
            if known is not None and kind not in known:
                problems.append("build_image image type %s" % kind)
    return problems


def environment_problems(contract, names, sudo=False):
    """Environment variables kiln passes that the checkout's run_sdk_container does not carry in."""
    env = contract.environment()
    problems = []
    sdkenv = env.get("sdkenv")
    if sdkenv is not None:
        problems.extend("environment variable %s in sdk_container/.sdkenv" % n for n in names if n not in sdkenv)
    keep = env.get("env_keep")
    if sudo and keep is not None:
        problems.extend("environment variable %s in sudo's env_keep (sdk_lib/90_env_keep)" % n for n in names if n not in keep)
    return problems
