# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Small guards for untrusted values: path confinement, single path components, cleanup on every exit.

Every value from an option, the inventory or a build record is untrusted where it enters; these
helpers are the one place that decides whether such a value may become a path.
"""

from __future__ import annotations

import os
import re
import signal

# NUL, newline, CR, tab and the other C0 controls and DEL: never part of a path kiln builds from data (they break
# DIGESTS files, logs and line-based protocols even where no shell sees them).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafePath(ValueError):
    """A value that may not become a path; the message is one line."""


def confine(root, relpath, what="path"):
    """``root/relpath`` resolved (symlinks included) and guaranteed to stay inside ``root``.

    ``relpath`` must be a non-empty relative path without ``..`` components or NUL bytes; the
    resolved result must be ``root`` itself or below it. Returns the resolved absolute path.
    """
    if not isinstance(relpath, str) or not relpath.strip():
        raise UnsafePath("%s %r is not a relative path" % (what, relpath))
    if "\0" in relpath:
        raise UnsafePath("%s %r contains a NUL byte" % (what, relpath))
    if _CONTROL.search(relpath):
        raise UnsafePath("%s %r contains a control character (newline, CR, tab, ...)" % (what, relpath))
    if os.path.isabs(relpath):
        raise UnsafePath("%s %r is absolute: it must be relative to %s" % (what, relpath, root))
    if ".." in relpath.replace("\\", "/").split("/"):
        raise UnsafePath("%s %r contains '..': it must stay inside %s" % (what, relpath, root))
    real_root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(real_root, relpath))
    if full != real_root and not full.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UnsafePath("%s %r resolves to %s, outside %s" % (what, relpath, full, root))
    return full


def component(name, what="name"):
    """``name`` when it is usable as one path component (no separators, not '.', '..', hidden or option-like (leading
    '-'), no NUL or other control character)."""
    if not isinstance(name, str) or not name or name in (".", "..") or name.startswith((".", "-")) \
            or "/" in name or "\\" in name or _CONTROL.search(name):
        raise UnsafePath("%s %r is not a plain file or directory name" % (what, name))
    return name


class ExitCleanup:
    """Run cleanup callbacks on every way out of a ``with`` block, SIGTERM/SIGINT/SIGHUP included.

    On one of those signals the callbacks run, the previous handler is restored and the signal is
    raised again, so the process still dies the way its parent expects. fail_json/exit_json leave
    through SystemExit and are covered by ``__exit__``. Callbacks run once, newest first.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self):
        self._callbacks = []
        self._previous = {}

    def add(self, callback):
        self._callbacks.append(callback)
        return callback

    def run(self):
        while self._callbacks:
            callback = self._callbacks.pop()
            try:
                callback()
            except Exception:  # pylint: disable=broad-except
                pass  # one failing cleanup must not keep the others from running

    def _handler(self, signum, _frame):
        self.run()
        self._restore()
        os.kill(os.getpid(), signum)

    def _restore(self):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                if signal.getsignal(signum) == signal.SIG_IGN:
                    continue  # an ignored signal does not end the run: nothing to clean up for it
                self._previous[signum] = signal.signal(signum, self._handler)
            except (ValueError, OSError):  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        try:
            self.run()
        finally:
            self._restore()
        return False
