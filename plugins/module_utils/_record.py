# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""The kiln build record: one JSON document per (version, board).

Layout and fields are documented in docs/build-record.md and docs/build-record.schema.json.
Writes are atomic (temp file, fsync, rename); a writer holds an exclusive lock for as long as it
has the record open, and a second writer is refused at once with RecordLocked.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import socket
import stat
import time

try:
    import fcntl
except ImportError:  # pragma: no cover - kiln targets are Linux
    fcntl = None

from ansible_collections.kiln.flatcar.plugins.module_utils._safety import UnsafePath, confine
from ansible_collections.kiln.flatcar.plugins.module_utils._schema import first_error
from ansible_collections.kiln.flatcar.plugins.module_utils._version import atomic_write

SCHEMA_VERSION = 1
KIND = "kiln.flatcar/build-record"
RECORD_NAME = "build-record.json"
STATUSES = ("running", "passed", "failed")
BOARDS = {"amd64-usr": "amd64", "arm64-usr": "arm64"}
CHUNK = 1024 * 1024
# Largest record kiln reads (a real one is a few hundred kB).
MAX_RECORD_BYTES = 64 * 1024 * 1024

# The JSON Schema every record is checked against when it is loaded: docs/build-record.schema.json verbatim
# (patterns end in '$(?!\n)': Python's and jsonschema's '$' would also match before a final newline)
# (tests/unit/test_record_schema.py compares them), here because modules cannot read docs/ on a builder.
# Checked with _schema, kiln's own validator (the jsonschema library may be missing on the builder).
RECORD_SCHEMA = json.loads(r'''{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "https://github.com/kiln-project/kiln.flatcar/docs/build-record.schema.json",
  "title": "kiln build record, schema version 1",
  "$comment": "kiln checks every record it loads against this schema: _record.RECORD_SCHEMA (a verbatim copy), _schema.py",
  "type": "object",
  "required": ["schema_version", "kind", "board", "version", "stage_order", "stages"],
  "additionalProperties": false,
  "properties": {
    "schema_version": {"const": 1},
    "kind": {"const": "kiln.flatcar/build-record"},
    "board": {"enum": ["amd64-usr", "arm64-usr"]},
    "arch": {"enum": ["amd64", "arm64"]},
    "version": {
      "type": "object",
      "required": ["FLATCAR_VERSION"],
      "additionalProperties": false,
      "properties": {
        "FLATCAR_VERSION": {"$ref": "#/$defs/flatcar_version"},
        "FLATCAR_VERSION_ID": {"type": "string", "pattern": "^[0-9]{1,9}\\.[0-9]{1,9}\\.[0-9]{1,9}$(?!\\n)"},
        "FLATCAR_BUILD_ID": {"type": "string", "maxLength": 128, "pattern": "^([A-Za-z0-9][A-Za-z0-9._+-]*)?$(?!\\n)"},
        "FLATCAR_SDK_VERSION": {"$ref": "#/$defs/flatcar_version"},
        "channel": {"enum": ["alpha", "beta", "stable", "lts", "developer"]},
        "official": {"type": "boolean"}
      }
    },
    "build_root": {"type": ["string", "null"], "maxLength": 4096, "pattern": "^/[^\\u0000-\\u001f\\u007f]*$(?!\\n)"},
    "build_dir": {"$ref": "#/$defs/relative_path_or_null"},
    "group": {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$(?!\\n)"},
    "source": {"type": "object"},
    "created": {"$ref": "#/$defs/timestamp"},
    "updated": {"$ref": "#/$defs/timestamp"},
    "stage_order": {"type": "array", "maxItems": 1000, "items": {"$ref": "#/$defs/stage_name"}},
    "stages": {"type": "object", "propertyNames": {"$ref": "#/$defs/stage_name"}, "additionalProperties": {"$ref": "#/$defs/stage"}}
  },
  "$defs": {
    "flatcar_version": {"type": "string", "maxLength": 160, "pattern": "^[0-9]{1,9}\\.[0-9]{1,9}\\.[0-9]{1,9}(\\+[A-Za-z0-9][A-Za-z0-9._+-]*)?$(?!\\n)"},
    "stage_name": {"type": "string", "maxLength": 128, "pattern": "^[a-z][a-z0-9_]*(:[A-Za-z0-9][A-Za-z0-9_.-]*)?$(?!\\n)"},
    "timestamp": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?Z$(?!\\n)"},
    "digest": {"type": ["string", "null"], "pattern": "^sha256:[0-9a-f]{64}$(?!\\n)"},
    "relative_path": {"type": "string", "maxLength": 4096, "pattern": "^(?!/)(?!(.*/)?\\.\\.(/|$))[A-Za-z0-9._+@%:=,~/-]+$(?!\\n)"},
    "relative_path_or_null": {"type": ["string", "null"], "maxLength": 4096, "pattern": "^(?!/)(?!(.*/)?\\.\\.(/|$))[A-Za-z0-9._+@%:=,~/-]+$(?!\\n)"},
    "output": {
      "type": "object",
      "required": ["path", "role", "size", "sha256"],
      "properties": {
        "path": {"$ref": "#/$defs/relative_path"},
        "role": {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]*$(?!\\n)"},
        "size": {"type": "integer", "minimum": 0, "maximum": 1099511627776000},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$(?!\\n)"}
      }
    },
    "stage": {
      "type": "object",
      "required": ["status", "outputs"],
      "properties": {
        "status": {"enum": ["running", "passed", "failed"]},
        "started": {"$ref": "#/$defs/timestamp"},
        "finished": {"type": ["string", "null"], "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?Z$(?!\\n)"},
        "duration_s": {"type": ["number", "null"]},
        "host": {"type": "string", "maxLength": 255},
        "input_digest": {"$ref": "#/$defs/digest"},
        "inputs": {"type": "object"},
        "outputs": {"type": "array", "items": {"$ref": "#/$defs/output"}},
        "attempts": {"type": "integer", "minimum": 1, "maximum": 1000000},
        "log_path": {"type": ["string", "null"], "maxLength": 4096},
        "message": {"type": ["string", "null"]},
        "details": {"$ref": "#/$defs/details"}
      }
    },
    "details": {
      "type": "object",
      "$comment": "free-form per stage; the packages stage's rebuild fields are typed (docs/mods.md)",
      "properties": {
        "usepkg_exclude": {"type": "array", "maxItems": 100000, "items": {"$ref": "#/$defs/package_text"}},
        "built_from_source": {"type": "array", "maxItems": 100000, "items": {"$ref": "#/$defs/package_text"}},
        "binary": {"type": "array", "maxItems": 100000, "items": {"$ref": "#/$defs/package_text"}},
        "rebuilt": {"type": "array", "maxItems": 100000, "items": {"$ref": "#/$defs/rebuilt_package"}}
      }
    },
    "package_text": {"type": "string", "maxLength": 512, "pattern": "^[A-Za-z0-9_<>=~][A-Za-z0-9+_.:*/<>=~-]*$(?!\\n)"},
    "rebuilt_package": {
      "type": "object",
      "required": ["package", "reason"],
      "properties": {
        "package": {"$ref": "#/$defs/package_text"},
        "atom": {"$ref": "#/$defs/package_text"},
        "reason": {"enum": ["mod", "excluded", "dependency"]}
      }
    }
  }
}''')


class RecordError(Exception):
    """A build record problem; the message is one line."""


class RecordLocked(RecordError):
    """Another writer holds the record."""


def _shown(text):
    """``text`` for a one-line message: control characters escaped."""
    return "".join(c if c >= " " and c != "\x7f" else repr(c)[1:-1] for c in str(text))


def check_data(data, path="build record"):
    """Validate a loaded record against RECORD_SCHEMA (and what a schema cannot say); RecordError naming ``path``
    and the first failing JSON path."""
    where = _shown(path)
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise RecordError("%s is not a kiln build record" % where)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise RecordError(
            "build record %s has schema version %s, this kiln writes %d: upgrade kiln or move the record aside"
            % (where, _shown(repr(data.get("schema_version"))[:40]), SCHEMA_VERSION)
        )
    problem = first_error(data, RECORD_SCHEMA)
    if problem is None and "arch" in data and BOARDS.get(data["board"]) != data["arch"]:
        problem = ("$.arch", "%r is not the arch of board %s" % (data["arch"], data["board"]))
    if problem is not None:
        raise RecordError("build record %s is invalid at %s: %s; move it aside (or fix it) and rerun the stage that wrote it"
                          % (where, _shown(problem[0]), _shown(problem[1])))
    return data


def load_data(path):
    """The record at ``path`` parsed and validated (``check_data``), or None when there is no file.

    Never anything but RecordError: a FIFO, a directory, a huge, truncated, non-UTF-8 or too deeply nested file
    all give one line."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordError("build record %s is unreadable (%s): move it aside and rerun with force" % (_shown(path), _shown(exc.strerror or exc)))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RecordError("build record %s is not a regular file: move it aside and rerun with force" % _shown(path))
        if st.st_size > MAX_RECORD_BYTES:
            raise RecordError("build record %s is %d bytes, more than kiln reads (%d): move it aside and rerun with force"
                              % (_shown(path), st.st_size, MAX_RECORD_BYTES))
        chunks = []
        while True:
            block = os.read(fd, CHUNK)
            if not block:
                break
            chunks.append(block)
    except OSError as exc:
        raise RecordError("build record %s is unreadable (%s): move it aside and rerun with force" % (_shown(path), _shown(exc.strerror or exc)))
    finally:
        os.close(fd)
    try:
        data = json.loads(b"".join(chunks).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise RecordError("build record %s is unreadable (%s): move it aside and rerun with force"
                          % (_shown(path), _shown(str(exc)[:200] or type(exc).__name__)))
    try:
        return check_data(data, path)
    except RecursionError:
        raise RecordError("build record %s is nested too deeply: move it aside and rerun with force" % _shown(path))


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def digest(obj):
    """sha256 of the canonical JSON of ``obj``, as 'sha256:<hex>'."""
    return "sha256:" + hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def state_dir(build_root, board, version):
    return os.path.join(build_root, "kiln", board, str(version))


def record_path(build_root, board, version):
    return os.path.join(state_dir(build_root, board, version), RECORD_NAME)


def build_root_of(path):
    """The build root a record at ``path`` belongs to: ``<build_root>/kiln/<board>/<version>/build-record.json``.

    This is the one place that knows the record sits four directories below the build root, so a tree
    copied to another host (artifacts and record at the same relative paths) works as is."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path)))))


def describe_output(build_root, path, role, sha256=None):
    """An output entry: path relative to the build root, role, size, sha256."""
    full = path if os.path.isabs(path) else os.path.join(build_root, path)
    rel = os.path.relpath(full, build_root)
    if rel == ".." or rel.startswith(".." + os.sep):
        raise RecordError("output %s is outside the build root %s" % (full, build_root))
    st = os.stat(full)
    return {"path": rel, "role": role, "size": st.st_size, "sha256": sha256 or file_sha256(full)}


def result_digest(stage):
    """What later stages chain on: the stage's input digest and its outputs' identities.
    Timestamps and hosts are left out, so a rerun that produces the same outputs changes nothing downstream."""
    if not stage:
        return None
    outs = sorted((o["path"], o["role"], o["sha256"]) for o in stage.get("outputs", []))
    return digest({"input_digest": stage.get("input_digest"), "outputs": outs, "status": stage.get("status")})


class BuildRecord:
    """A build record held open (and locked) by one writer."""

    def __init__(self, path, data, lock_fd=None, read_only=False):
        self.path = path
        self.data = data
        self._lock_fd = lock_fd
        self.read_only = read_only

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path, board=None, version=None, create=True, read_only=False, build_root=None, wait=0.0, poll=0.2):
        """Open (creating if asked) the record at ``path``.

        Unless ``read_only`` it takes an exclusive lock, waiting up to ``wait`` seconds (polling every ``poll``
        seconds) for another writer, then raises RecordLocked. ``read_only`` writes nothing at all: no state
        directory, no lock file, no record."""
        if not create and not os.path.isfile(path):
            raise RecordError("no build record at %s: run the earlier build stages first" % path)
        lock_fd = None if read_only else cls._lock(path, wait, poll)
        try:
            data = cls._load(path)
            if data is None:
                if not create:
                    raise RecordError("no build record at %s: run the earlier build stages first" % path)
                data = cls.new_data(board, version, build_root)
            elif board and data.get("board") != board:
                raise RecordError("build record %s is for board %s, not %s" % (path, data.get("board"), board))
        except RecordError:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return cls(path, data, lock_fd, read_only)

    @classmethod
    def _lock(cls, path, wait, poll):
        """The exclusive lock on ``<path>.lock``: its fd, or RecordLocked after ``wait`` seconds."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, float(wait or 0))
        while fcntl is not None:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                left = deadline - time.monotonic()
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK) and left > 0:
                    time.sleep(min(max(poll, 0.01), left))
                    continue
                os.close(lock_fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                holder = cls._lock_holder(path)
                raise RecordLocked(
                    "build record %s is being written by another kiln task%s%s; wait for it to finish or stop it, then rerun"
                    % (path, (" (" + holder + ")") if holder else "", (" (waited %gs)" % wait) if wait else "")
                )
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, ("pid=%d host=%s since=%s\n" % (os.getpid(), socket.gethostname(), now())).encode())
        return lock_fd

    @staticmethod
    def _lock_holder(path):
        try:
            with open(path + ".lock", "r", encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError:
            return ""

    @staticmethod
    def _load(path):
        return load_data(path)

    @staticmethod
    def new_data(board, version, build_root=None):
        ts = now()
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": KIND,
            "board": board,
            "arch": BOARDS.get(board, board),
            "version": dict(version or {}),
            "build_root": build_root,
            "build_dir": None,
            "created": ts,
            "updated": ts,
            "stage_order": [],
            "stages": {},
        }

    def close(self):
        if self._lock_fd is not None:
            try:
                if fcntl is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- reading -----------------------------------------------------------------------------
    def stage(self, name):
        return self.data["stages"].get(name)

    def stage_result_digest(self, name):
        return result_digest(self.stage(name))

    @property
    def build_root(self):
        return self.data.get("build_root") or build_root_of(self.path)

    def verify_outputs(self, name, build_root=None, check_hash=True):
        """Return a list of problems (empty when every recorded output is intact)."""
        stage = self.stage(name)
        if not stage:
            return ["stage %s has no record" % name]
        root = build_root or self.build_root
        problems = []
        for out in stage.get("outputs", []):
            try:
                full = confine(root, out["path"], "recorded output")
            except UnsafePath as exc:
                problems.append(str(exc))
                continue
            try:
                st = os.stat(full)
            except OSError:
                problems.append("%s is missing" % out["path"])
                continue
            if st.st_size != out["size"]:
                problems.append("%s changed size (%d, recorded %d)" % (out["path"], st.st_size, out["size"]))
            elif check_hash and file_sha256(full) != out["sha256"]:
                problems.append("%s changed content (sha256 differs from the record)" % out["path"])
        return problems

    def is_current(self, name, input_digest, build_root=None, extra_check=None):
        """(True, reason) when the stage passed with these inputs and its outputs still verify."""
        stage = self.stage(name)
        if not stage:
            return False, "stage has not run"
        if stage.get("status") != "passed":
            return False, "last run %s" % stage.get("status")
        if stage.get("input_digest") != input_digest:
            return False, "inputs changed"
        problems = self.verify_outputs(name, build_root)
        if problems:
            return False, "; ".join(problems[:3])
        if extra_check is not None:
            problem = extra_check(stage)
            if problem:
                return False, problem
        return True, "passed with the same inputs and its outputs verify"

    # -- writing -----------------------------------------------------------------------------
    def _touch(self):
        self.data["updated"] = now()

    def begin(self, name, inputs, input_digest, log_path=None):
        if self.read_only:
            raise RecordError("record opened read-only")
        previous = self.stage(name) or {}
        entry = {
            "status": "running",
            "started": now(),
            "finished": None,
            "duration_s": None,
            "host": socket.gethostname(),
            "input_digest": input_digest,
            "inputs": inputs,
            "outputs": [],
            "attempts": int(previous.get("attempts", 0)) + 1,
            "log_path": log_path,
            "message": None,
            "details": {},
        }
        self.data["stages"][name] = entry
        if name not in self.data["stage_order"]:
            self.data["stage_order"].append(name)
        self._touch()
        self.save()
        return entry

    def finish(self, name, outputs, details=None, status="passed", message=None):
        entry = self.data["stages"][name]
        entry["status"] = status
        entry["finished"] = now()
        entry["duration_s"] = _duration(entry.get("started"), entry["finished"])
        entry["outputs"] = list(outputs)
        if details:
            entry["details"].update(details)
        entry["message"] = message
        self._touch()
        self.save()
        return entry

    def fail(self, name, message, details=None):
        entry = self.data["stages"].get(name)
        if entry is None:
            entry = self.begin(name, {}, None)
        return self.finish(name, entry.get("outputs", []), details, status="failed", message=message)

    def set(self, key, value):
        self.data[key] = value
        self._touch()

    def save(self):
        if self.read_only:
            raise RecordError("record opened read-only")
        atomic_write(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")

    def summary(self):
        """A compact view for module returns."""
        return {
            "path": self.path,
            "board": self.data.get("board"),
            "version": self.data.get("version", {}).get("FLATCAR_VERSION"),
            "build_dir": self.data.get("build_dir"),
            "stages": dict((n, self.data["stages"][n]["status"]) for n in self.data.get("stage_order", []) if n in self.data["stages"]),
        }


def _duration(start, end):
    try:
        fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
        return round((datetime.datetime.strptime(end, fmt) - datetime.datetime.strptime(start, fmt)).total_seconds(), 3)
    except (TypeError, ValueError):
        return None
