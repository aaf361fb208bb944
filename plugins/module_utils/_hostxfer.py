# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Host-to-host helpers: an ssh command line for rsync -e, and running a small Python program on
another host over ssh (the program text and its JSON input travel on stdin, the JSON answer comes
back on stdout). Nothing goes through the Ansible controller."""

from __future__ import annotations

import base64
import json
import shlex


def ssh_argv(ssh_config=None, ssh_key=None, port=None, options=None):
    argv = ["ssh", "-o", "BatchMode=yes"]
    if ssh_config:
        argv += ["-F", ssh_config]
    if ssh_key:
        argv += ["-i", ssh_key, "-o", "IdentitiesOnly=yes"]
    if port:
        argv += ["-p", str(port)]
    for opt in options or []:
        argv += ["-o", opt]
    return argv


def ssh_e(argv):
    """The -e argument of rsync for an ssh argv."""
    return " ".join(shlex.quote(a) for a in argv)


def remote_python(runner, ssh, target, program, payload, python="python3", msg=None):
    """Run ``program`` (Python source defining main(payload) -> dict) on ``target`` and return its dict."""
    blob = base64.b64encode(json.dumps(payload).encode("utf-8")).decode("ascii")
    source = program + "\nimport base64 as _b, json as _j, sys as _s\n" \
        "_s.stdout.write(_j.dumps(main(_j.loads(_b.b64decode('%s')))))\n" % blob
    rc, out, err = runner.capture(ssh + [target, python, "-"], data=source)
    if rc != 0:
        lines = (err or "").strip().splitlines()
        runner.fail((msg or "remote step on %s failed" % target) + " (rc=%d): %s" % (rc, lines[-1] if lines else "no output"),
                    stderr_tail=lines[-20:])
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        runner.fail("remote step on %s returned no JSON: %s" % (target, (out or "")[-200:]))
    return None
