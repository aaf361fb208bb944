# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""The stage cycle: the one engine every kiln module that reads or writes a build record goes through.

    locate -> lock -> is_current -> (check mode: report) -> begin -> body -> finish / fail -> unlock

* ``locate`` finds the record (from a record path, from scripts_dir + board (+ version), or from a build
  root + board + version) and derives the build root in one place (docs/build-record.md).
* ``Stage.open`` takes the record's exclusive flock and holds it until ``finish``/``fail``/``close``;
  another writer is waited for up to ``wait`` seconds (the one lock policy). In check mode the record is
  opened read-only and nothing is written: no record, state directory, lock file or log.
* ``is_current`` is true when the stage passed with the same input digest and every recorded output
  still has its size and sha256 (plus an optional extra check); ``force`` overrides it.
* ``require`` refuses to go on when an earlier stage has not passed.
* While a writable stage holds the record, every ``module.fail_json`` marks the stage ``failed`` first,
  and any unexpected exception in the ``with`` body becomes a failed stage and one line naming the module,
  the stage and the exception (no traceback). The lock is always released.
"""

from __future__ import annotations

import os
import sys
import tempfile

from ansible_collections.kiln.flatcar.plugins.module_utils._record import (
    BuildRecord,
    RecordError,
    build_root_of,
    describe_output,
    digest,
    record_path as record_path_for,
)
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import Runner
from ansible_collections.kiln.flatcar.plugins.module_utils._version import VERSIONFILE, FlatcarVersion, VersionError, read_versionfile

DEFAULT_POLL = 0.2


class LocateError(RecordError):
    """The build record cannot be located; the message is one line."""


def one_line(text, limit=1000):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_exception(exc_type, exc, limit=600):
    """``<ExcType>: <one line>``: how the stage engine and the module guard name an unexpected exception."""
    return "%s: %s" % (exc_type.__name__, one_line(exc, limit))


def offending_options(module, exc):
    """Names of the options that most likely caused ``exc``: those whose value appears in its text, else every
    option the task set (not its defaults); ``no_log`` options are never named by value."""
    params = getattr(module, "params", None) or {}
    spec = getattr(module, "argument_spec", None) or {}
    text = str(exc)
    found = {}
    for key in sorted(params):
        value = params[key]
        if key.startswith("_") or (spec.get(key) or {}).get("no_log"):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        hits = [str(v) for v in values if isinstance(v, (str, int, float)) and not isinstance(v, bool)
                and len(str(v)) >= 3 and str(v) in text]
        if hits:
            found[key] = hits
    # a value that is only part of another option's matching value (a user name inside a path) is not the culprit
    named = [key for key, hits in found.items()
             if not all(any(h in other and h != other for k2, others in found.items() if k2 != key for other in others)
                        for h in hits)]
    if named:
        return sorted(named)
    return [key for key in sorted(params) if not key.startswith("_") and params[key] is not None
            and params[key] != (spec.get(key) or {}).get("default")]


def guarded(module, run, module_name=None):
    """Run ``run()`` (a module's body, after its AnsibleModule exists): any unexpected exception becomes
    ``fail_json(msg="<module>: unexpected <ExcType>: <one line>; input: <option names>")``, never a traceback.

    The one module-level guard (docs/design.md); ``fail_json``/``exit_json`` (SystemExit) pass through, and stage
    bodies keep the engine's own conversion (``Stage.__exit__``), which names the stage."""
    try:
        return run()
    except Exception as exc:  # pylint: disable=broad-except
        name = module_name or getattr(module, "_name", None) or os.path.basename(sys.argv[0] or "kiln")
        names = offending_options(module, exc)
        line = "%s: unexpected %s; input: %s" % (name, describe_exception(type(exc), exc), ", ".join(names) if names else "(none)")
        module.fail_json(msg=one_line(line), exception_type=type(exc).__name__, input_options=names)
    return None  # not reached: fail_json exits


def scripts_build_root(scripts_dir):
    """The SDK build root of a scripts checkout (DEFAULT_BUILD_ROOT, /mnt/host/source/src/build in the SDK)."""
    return os.path.join(os.path.abspath(scripts_dir), "__build__", "images")


def pinned_version(scripts_dir):
    """FLATCAR_VERSION pinned in the checkout's version.txt."""
    try:
        vf = read_versionfile(os.path.join(os.path.abspath(scripts_dir), VERSIONFILE))
        return FlatcarVersion.parse(vf["FLATCAR_VERSION"], "FLATCAR_VERSION in version.txt").version
    except (OSError, KeyError, ValueError, VersionError) as exc:
        raise LocateError("cannot read the pinned version of %s: %s" % (scripts_dir, one_line(exc)))


class Location:
    """Where a (version, board) keeps its record, state and logs. ``record_path`` is None without a record."""

    def __init__(self, record_path=None, build_root=None, board=None, version=None):
        self.record_path = record_path
        self.build_root = build_root
        self.board = board
        self.version = version

    @property
    def state_dir(self):
        return os.path.dirname(self.record_path) if self.record_path else None

    def log_path(self, stage):
        """``<state dir>/logs/<stage>.log`` (``:`` becomes ``_``), or None without a record."""
        if not self.record_path or not stage:
            return None
        return os.path.join(self.state_dir, "logs", stage.replace(":", "_") + ".log")

    def relative(self, path):
        """``path`` relative to the build root, or None when it lies outside it (or there is no build root)."""
        if not self.build_root:
            return None
        rel = os.path.relpath(os.path.abspath(path), self.build_root)
        return None if rel.startswith("..") else rel


def locate(record_path=None, scripts_dir=None, board=None, version=None, build_root=None):
    """The one way to find a build record.

    * ``record_path``: that record; the build root is ``build_root`` or four directories above it;
    * ``scripts_dir`` + ``board``: ``<scripts_dir>/__build__/images`` (or ``build_root``) and the version
      given or pinned in the checkout's version.txt;
    * ``build_root`` + ``board`` + ``version``: the record under that build root;
    * otherwise no record (``build_root`` may still be given for relative paths).
    Raises LocateError with one line."""
    if record_path:
        record_path = os.path.abspath(record_path)
        return Location(record_path, os.path.abspath(build_root or build_root_of(record_path)), board, version)
    if scripts_dir:
        if not board:
            raise LocateError("scripts_dir needs board to find the build record")
        root = os.path.abspath(build_root or scripts_build_root(scripts_dir))
        version = str(version or pinned_version(scripts_dir))
        return Location(record_path_for(root, board, version), root, board, version)
    if build_root and (board or version):
        if not (board and version):
            raise LocateError("build_root needs both board and version to find the build record")
        root = os.path.abspath(build_root)
        return Location(record_path_for(root, board, str(version)), root, board, str(version))
    return Location(None, os.path.abspath(build_root) if build_root else None, board, version)


def private_log(module_name):
    """A log in ``$TMPDIR/kiln-<uid>/`` for runs without a build record (the directory is made on first write)."""
    return os.path.join(tempfile.gettempdir(), "kiln-%d" % os.getuid(), "%s.log" % module_name.rsplit(".", 1)[-1])


class Stage:
    """One stage of one build record, driven by one module run (see the module docstring).

    ``name`` None with ``writes=False`` makes a reader: the record is opened read-only and never locked.
    Use it as a context manager around the whole module body."""

    def __init__(self, module, name, location, writes=True, wait=0.0, poll=DEFAULT_POLL, create=False,
                 version_fields=None, log_path=None, module_name=None):
        self.module = module
        self.name = name
        self.location = location
        self.writes = writes and name is not None
        self.wait = wait
        self.poll = poll
        self.create = create
        self.version_fields = version_fields
        self.check_mode = bool(module.check_mode)
        self.force = bool((module.params or {}).get("force"))
        self.module_name = module_name or getattr(module, "_name", None) or os.path.basename(sys.argv[0] or "kiln")
        self.log_path = log_path or location.log_path(name) or private_log(self.module_name)
        self.record = None
        self.inputs = None
        self.input_digest = None
        self.begun = False
        self._module_fail_json = None
        self._fail_details = None

    # -- lock / unlock -----------------------------------------------------------------------
    @property
    def locked(self):
        return self._module_fail_json is not None

    def open(self):
        """Load the record (lock it unless check mode or a reader); None when the location has no record."""
        loc = self.location
        if loc.record_path is None:
            return None
        read_only = self.check_mode or not self.writes
        try:
            self.record = BuildRecord.open(loc.record_path, board=loc.board, version=self.version_fields, create=self.create,
                                           read_only=read_only, build_root=loc.build_root, wait=self.wait, poll=self.poll)
        except RecordError as exc:
            self.module.fail_json(msg=one_line(exc), record_path=loc.record_path)
        except OSError as exc:
            self.module.fail_json(msg=one_line("cannot open the build record %s: %s" % (loc.record_path, exc)),
                                  record_path=loc.record_path)
        if not read_only:
            self._module_fail_json = self.module.fail_json
            self.module.fail_json = self._failing
        return self.record

    def close(self):
        """Release the lock (idempotent); the module's fail_json is its own again."""
        if self._module_fail_json is not None:
            self.module.fail_json = self._module_fail_json
            self._module_fail_json = None
        if self.record is not None:
            self.record.close()

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, _tb):
        if exc_type is None or issubclass(exc_type, (SystemExit, GeneratorExit)):
            self.close()
            return False
        where = "stage %s" % self.name if self.name else "build record %s" % self.location.record_path
        self.fail("%s: %s failed with %s" % (self.module_name, where, describe_exception(exc_type, exc)),
                  exception_type=exc_type.__name__)
        return False  # not reached: fail_json exits

    # -- reading -----------------------------------------------------------------------------
    def require(self, stage_name, hint):
        """The entry of an earlier stage that must have passed; otherwise fail with one line ending in ``hint``."""
        entry = self.record.stage(stage_name) if self.record is not None else None
        if not entry or entry.get("status") != "passed":
            status = entry.get("status") if entry else "never ran"
            self.module.fail_json(msg=one_line("stage %s has not passed in %s (%s): %s" % (
                stage_name, self.location.record_path or "the build record", status, hint)), record_path=self.location.record_path)
        return entry

    def result_digest(self, stage_name):
        return self.record.stage_result_digest(stage_name) if self.record is not None else None

    def is_current(self, inputs, extra_check=None, input_digest=None):
        """``(current, reason)``: passed with these inputs and every recorded output still verifies; ``force`` wins.

        ``input_digest`` overrides ``digest(inputs)`` (for inputs recorded with host-specific parts)."""
        self.inputs = inputs
        self.input_digest = input_digest or digest(inputs)
        if self.record is None:
            return False, "no build record"
        current, reason = self.record.is_current(self.name, self.input_digest, build_root=self.location.build_root,
                                                 extra_check=extra_check)
        if current and self.force:
            return False, "forced"
        return current, reason

    def entry(self):
        return self.record.stage(self.name) if self.record is not None else None

    def describe(self, path, role, sha256=None):
        return describe_output(self.location.build_root, path, role, sha256=sha256)

    # -- writing -----------------------------------------------------------------------------
    def _writable(self, what):
        if self.check_mode:
            raise RecordError("kiln bug: %s of stage %s in check mode" % (what, self.name))
        return self.record is not None and self.locked

    def begin(self, log_path=None, inputs=None):
        """Mark the stage running (after is_current, never in check mode)."""
        if inputs is not None:
            self.inputs, self.input_digest = inputs, digest(inputs)
        if self._writable("begin"):
            self.record.begin(self.name, self.inputs or {}, self.input_digest, log_path=log_path or self.log_path)
        self.begun = True

    def finish(self, outputs=(), details=None):
        """Mark the stage passed with its outputs, save, unlock; the entry (None without a record)."""
        entry = None
        if self._writable("finish"):
            if not self.begun:
                self.begin()
            entry = self.record.finish(self.name, outputs, details)
        self.close()
        return entry

    def fail(self, msg, details=None, **extra):
        """Fail the module with one line; the stage is recorded ``failed`` (with ``details``) when it holds the record."""
        self._fail_details = details
        self.module.fail_json(msg=one_line(msg), **extra)

    def _failing(self, msg=None, **kwargs):
        """Stands in for module.fail_json while the stage holds the record: record the failure, unlock, then fail."""
        original = self._module_fail_json
        msg = one_line(msg)
        try:
            if not self.begun:
                self.begin()
            self.record.fail(self.name, msg, details=dict(self._fail_details or {}, **({"rc": kwargs["rc"]} if "rc" in kwargs else {})))
        except (RecordError, OSError) as exc:
            kwargs["record_error"] = one_line(exc)
        self.close()
        kwargs.setdefault("record_path", self.location.record_path)
        kwargs.setdefault("stage", self.name)
        original(msg=msg, **kwargs)

    # -- what modules need around the cycle ------------------------------------------------------
    def runner(self, **kwargs):
        """The module's Runner: it logs to ``log_path``, except in check mode, where it writes no log at all."""
        extra = {"log_path": self.log_path}
        if self.location.record_path:
            extra["record_path"] = self.location.record_path
        if self.writes:
            extra["stage"] = self.name
        extra.update(kwargs.pop("fail_extra", None) or {})
        if self.check_mode:
            return Runner(self.module, log_path=os.devnull, fail_extra=extra, **kwargs)
        parent = os.path.dirname(self.log_path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
        return Runner(self.module, log_path=self.log_path, fail_extra=extra, **kwargs)

    def base_result(self):
        """The keys every record module returns."""
        result = {"changed": False, "log_path": self.log_path}
        if self.location.record_path:
            result["record_path"] = self.location.record_path
            if self.writes:
                result["stage"] = self.name
        return result
