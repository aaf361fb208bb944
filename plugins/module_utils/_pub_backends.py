# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""kiln.flatcar.publish, part 3: mirror backends behind one interface, chosen by :func:`select`.

A backend gets an immutable ``_pub_manifest.Layout`` (paths, files, current pointer), the module's
options (read only), the runner and a private work directory; it answers the publisher's calls and
keeps no state of the publisher. ``local`` and ``dir`` run the directory operations of ``_mirror``:
in-process, or on the mirror host through ``_hostxfer`` (the one way kiln runs code on another host).
``s3`` lives in ``_pub_s3`` (boto3 is imported only when it is chosen).
"""

from __future__ import annotations

import abc
import os
import posixpath
import shutil

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._hostxfer import remote_python_call, ssh_command, ssh_e, target
from ansible_collections.kiln.flatcar.plugins.module_utils._mirror import PARTIAL_DIR, MirrorError, own_source, run_op
from ansible_collections.kiln.flatcar.plugins.module_utils._pub_manifest import Layout, PublishError
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import which


def check_dir_base(value, what):
    """An absolute, normalised directory for the directory backends."""
    if not isinstance(value, str) or not posixpath.isabs(value) or ".." in value.split("/") \
            or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise PublishError("%s must be an absolute directory without '..' or control characters, not %r" % (what, value))
    return posixpath.normpath(value)


class Backend(abc.ABC):
    """What the publisher asks of a mirror. Every method raises PublishError (one line) on failure."""

    kind = None
    join = staticmethod(posixpath.join)
    # True when a failed transfer may leave a receiver on the mirror still writing (no cleanup right after it).
    transfer_is_remote = False

    def __init__(self, layout, opts, runner, workdir):
        self.layout = layout
        self.opts = opts
        self.runner = runner
        self.workdir = workdir

    @classmethod
    def make_layout(cls, opts, board, version, files):
        return Layout.build(cls.join, opts["base"], opts["update_base"], board, version, files)

    def open(self):
        """Acquire what the backend needs for the run (called after close() is registered for every exit path)."""

    @abc.abstractmethod
    def describe(self):
        """Where the mirror is, for logs and the record."""

    @abc.abstractmethod
    def inspect(self, prepare):
        """{'areas': {area: {'final_exists', 'final': {name: state}}}, 'current', 'current_kind'}; prepares staging if asked."""

    @abc.abstractmethod
    def transfer(self, pending):
        """Send the pending files to staging."""

    @abc.abstractmethod
    def commit(self, pending):
        """Verify staging against the manifest and make the pending files visible under the version path."""

    @abc.abstractmethod
    def verify(self):
        """{'checked', 'problems', 'current'}: the version path against the manifest."""

    @abc.abstractmethod
    def set_current(self, expect):
        """Point current at the layout's version (compare-and-swap on ``expect``); {'before', 'after', 'changed'}."""

    def discard_empty(self):
        """Remove this release's staging when it holds nothing (after a failure). Must not fail."""

    def close(self):
        """Release what the backend holds (connections, agents). Must not fail; runs on every exit path."""


class LocalBackend(Backend):
    """A mirror directory on this host."""

    kind = "local"

    @classmethod
    def make_layout(cls, opts, board, version, files):
        opts = dict(opts, base=check_dir_base(opts["base"], "base"),
                    update_base=check_dir_base(opts["update_base"], "update_base") if opts["update_base"] else None)
        return Layout.build(cls.join, opts["base"], opts["update_base"], board, version, files)

    def describe(self):
        return "local:%s" % self.layout.base

    def op(self, name, spec):
        self.runner.note("mirror op %s" % name)
        try:
            return run_op(name, spec)
        except MirrorError as exc:
            raise PublishError(str(exc))

    def inspect(self, prepare):
        return self.op("inspect", self.layout.spec(prepare=prepare))

    def transfer(self, pending):
        for f in pending:
            staging = self.layout.staging(f.area)
            dst = os.path.join(staging, f.name)
            try:
                if os.path.isfile(dst) and not os.path.islink(dst) and os.path.getsize(dst) == f.size:
                    continue  # commit hashes it
                tmp = os.path.join(staging, ".%s.kiln-tmp" % f.name)
                shutil.copyfile(f.source, tmp)
                os.chmod(tmp, 0o644)
                os.rename(tmp, dst)
            except OSError as exc:
                raise PublishError("cannot copy %s to %s: %s; nothing was made visible, rerun to resume"
                                   % (f.source, staging, exc.strerror or exc))

    def commit(self, pending):
        return self.op("commit", self.layout.spec())

    def verify(self):
        return self.op("verify", self.layout.spec())

    def set_current(self, expect):
        return self.op("set_current", {"board_dir": self.layout.board_dir, "target": self.layout.version, "expect": expect})

    def discard_empty(self):
        try:
            run_op("discard_empty", self.layout.spec())
        except MirrorError:
            pass


class SshDirBackend(LocalBackend):
    """A mirror directory on another host: rsync over SSH from this host, _mirror ops through _hostxfer."""

    kind = "dir"
    transfer_is_remote = True

    def __init__(self, layout, opts, runner, workdir):
        LocalBackend.__init__(self, layout, opts, runner, workdir)
        host = opts["mirror_host"]
        try:  # the one validator per kind (_validate)
            _validate.host(host, "mirror_host")
            if opts["ssh_user"]:
                _validate.user(opts["ssh_user"], "ssh_user")
            _validate.command(opts["rsync_path"], "rsync_path")
            _validate.command(opts["remote_python"], "remote_python")
        except _validate.Invalid as exc:
            raise PublishError("%s%s" % (exc, " (use backend local when the mirror is this host)" if not host else ""))
        self.dest = target(opts, "mirror_host")
        module = runner.module
        self.ssh_exe = which(module, "ssh", required=True, msg="ssh not found on the source host: install openssh-client")
        self.rsync = opts["rsync_executable"] or which(module, "rsync", required=True, msg="rsync not found on the source host: install rsync")
        self.agent = None
        self.ssh = None
        if not opts["ssh_private_key"]:
            self.ssh, _agent = ssh_command(runner, opts, ssh=self.ssh_exe)
        self.source = own_source()

    def open(self):
        if self.ssh is None:  # the private key goes into a per-run ssh-agent (_hostxfer.ssh_command)
            self.ssh, problem = ssh_command(self.runner, self.opts, self.workdir, ssh=self.ssh_exe)
            if self.ssh is None:
                raise PublishError(problem)
            self.agent = problem

    def describe(self):
        return "%s:%s" % (self.dest, self.layout.base)

    def _call(self, name, spec):
        self.runner.note("mirror op %s on %s" % (name, self.dest))
        rc, answer, lines = remote_python_call(self.runner, self.ssh, self.dest, self.source, {"op": name, "spec": spec},
                                               self.opts["remote_python"])
        if answer is None:
            self.runner.note("ssh rc=%d: %s" % (rc, " | ".join(lines[-5:])))
        return rc, answer, lines

    def op(self, name, spec):
        rc, answer, lines = self._call(name, spec)
        if answer is None:
            raise PublishError("cannot run the mirror helper on %s (ssh rc=%d): %s" % (
                self.dest, rc, lines[-1] if lines else "no output; is python3 installed there?"), rc=rc,
                cmd=self.ssh + ["--", self.dest, self.opts["remote_python"], "-"])
        if not answer.get("ok"):
            raise PublishError(answer.get("error") or "mirror helper failed", rc=rc)
        return answer["result"]

    def transfer(self, pending):
        xfer = os.path.join(self.workdir, "xfer")
        for area in ("update", "release"):
            files = [f for f in pending if f.area == area]
            if not files:
                continue
            src = os.path.join(xfer, area)
            os.makedirs(src, mode=0o700)
            for f in files:
                os.symlink(f.source, os.path.join(src, f.name))
            argv = [self.rsync, "-rtpL", "--chmod=D0755,F0644", "--partial-dir=" + PARTIAL_DIR, "--protect-args",
                    "-e", ssh_e(self.ssh), "--rsync-path=" + self.opts["rsync_path"]]
            argv += list(self.opts["rsync_extra_args"]) + ["--", src + "/", "%s:%s/" % (self.dest, self.layout.staging(area))]
            self.runner.run(argv, msg="rsync of %d %s file(s) to %s failed; nothing was made visible, rerun to resume"
                            % (len(files), area, self.dest))

    def discard_empty(self):
        self._call("discard_empty", self.layout.spec())

    def close(self):
        if self.agent is not None:
            self.agent.close()


def select(kind):
    """The backend class for option ``backend``."""
    if kind == "s3":
        from ansible_collections.kiln.flatcar.plugins.module_utils._pub_s3 import S3Backend
        return S3Backend
    try:
        return {"local": LocalBackend, "dir": SshDirBackend}[kind]
    except KeyError:
        raise PublishError("unknown backend %r" % kind)
