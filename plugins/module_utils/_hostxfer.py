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
import os
import re
import shlex
import signal
import time


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


def ssh_command(runner, params, workdir=None, ssh="ssh", options=()):
    """``(argv, agent)`` for the shared ssh options of a module (``_argspec.ssh_args``).

    ``argv`` is the ssh command up to (not including) ``--`` and the target; ``agent`` is a started ``SshAgent``
    holding ``ssh_private_key`` (the caller closes it on every exit path, see _safety.ExitCleanup), or None.
    ``workdir`` is a private 0700 directory for the agent socket (needed with ``ssh_private_key``). Returns
    ``(None, problem)`` with a one-line problem when the agent cannot hold the key."""
    opts = ["ConnectTimeout=20"] + list(options)
    if params.get("ssh_host_key_checking"):
        opts.append("StrictHostKeyChecking=%s" % params["ssh_host_key_checking"])
    if params.get("ssh_known_hosts_file"):
        opts.append("UserKnownHostsFile=%s" % params["ssh_known_hosts_file"])
    agent = None
    if params.get("ssh_private_key"):
        module = runner.module
        agent = SshAgent(runner, workdir, agent=module.get_bin_path("ssh-agent", required=True),
                         add=module.get_bin_path("ssh-add", required=True))
        problem = agent.start(params["ssh_private_key"])
        if problem:
            return None, problem
        opts += agent.ssh_options()
    for value in params.get("ssh_options") or []:  # deprecated: -o values
        opts.append(value)
    argv = [ssh] + ssh_argv(params.get("ssh_config"), params.get("ssh_private_key_file"), params.get("ssh_port"), opts)[1:]
    return argv + list(params.get("ssh_extra_args") or []), agent


def target(params, host_key):
    """``user@host`` (or ``host``) for the module's host option and ``ssh_user``."""
    user = params.get("ssh_user")
    return "%s@%s" % (user, params[host_key]) if user else params[host_key]


def remote_mkdir(runner, ssh, dest, root, rel, python="python3", msg=None):
    """``mkdir -p root/rel`` on ``dest`` without a shell: a Python call that gets both as JSON data and refuses a
    ``rel`` that leaves ``root`` (``..``, an absolute path, or a symlink pointing elsewhere). Returns the real path."""
    answer = remote_python(runner, ssh, dest, MKDIR_PROGRAM, {"root": root, "rel": rel}, python,
                           msg=msg or "cannot create %s/%s on %s" % (root, rel, dest))
    if answer.get("error"):
        runner.fail("cannot create %s/%s on %s: %s" % (root, rel, dest, answer["error"]))
    return answer["path"]


MKDIR_PROGRAM = r'''
import os
def main(p):
    root, rel = p["root"], p["rel"]
    parts = [c for c in rel.split("/") if c not in ("", ".")]
    if os.path.isabs(rel) or ".." in parts or "\0" in rel:
        return {"error": "%r is not a plain relative path" % rel}
    os.makedirs(root, exist_ok=True)
    real_root = os.path.realpath(root)
    cur = real_root
    for part in parts:
        cur = os.path.join(cur, part)
        if not os.path.isdir(cur):
            os.mkdir(cur)
        real = os.path.realpath(cur)
        if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
            return {"error": "%s resolves to %s, outside %s" % (cur, real, real_root)}
        cur = real
    return {"path": cur}
'''


def ssh_e(argv):
    """The -e argument of rsync for an ssh argv."""
    return " ".join(shlex.quote(a) for a in argv)


def remote_python_call(runner, ssh, target, program, payload, python="python3"):
    """Run ``program`` (Python source defining main(payload) -> dict) on ``target``; never fails the module.

    Returns ``(rc, answer, stderr_lines)``; ``answer`` is the dict ``main`` returned, or None. The
    remote command is one quoted word list after ``--`` (no shell string is built from the values),
    and the program with its base64 JSON payload travels on stdin, never in argv.
    """
    blob = base64.b64encode(json.dumps(payload).encode("utf-8")).decode("ascii")
    source = program + "\nimport base64 as _b, json as _j, sys as _s\n" \
        "_s.stdout.write(_j.dumps(main(_j.loads(_b.b64decode('%s')))))\n" % blob
    rc, out, err = runner.capture(list(ssh) + ["--", target, shlex.join([python, "-"])], data=source)
    lines = (err or "").strip().splitlines()
    answer = None
    if rc == 0:
        try:
            answer = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            lines.append("no JSON answer: %s" % (out or "")[-200:])
    return rc, answer, lines


def remote_python(runner, ssh, target, program, payload, python="python3", msg=None):
    """Run ``program`` (Python source defining main(payload) -> dict) on ``target`` and return its dict."""
    rc, answer, lines = remote_python_call(runner, ssh, target, program, payload, python)
    if rc != 0:
        runner.fail((msg or "remote step on %s failed" % target) + " (rc=%d): %s" % (rc, lines[-1] if lines else "no output"),
                    stderr_tail=lines[-20:])
    if answer is None:
        runner.fail("remote step on %s returned no JSON: %s" % (target, lines[-1] if lines else ""))
    return answer


class SshAgent:
    """A private ssh-agent for one run, so a private key given as text never touches the disk.

    The agent listens on a socket in ``directory`` (a private 0700 directory of the caller); the key
    reaches it on ssh-add's stdin. ``close`` kills the agent (by its pid) and removes the socket: call
    it on every exit path (see _safety.ExitCleanup). ``lifetime`` bounds how long the agent keeps the
    key should this process be killed without a chance to clean up.
    """

    def __init__(self, runner, directory, agent="ssh-agent", add="ssh-add", lifetime=43200):
        self.runner = runner
        self.sock = os.path.join(directory, "agent.sock")
        self.agent = agent
        self.add = add
        self.lifetime = lifetime
        self.pid = None

    def start(self, key_text):
        """Start the agent and load ``key_text``; returns None, or a one-line problem."""
        rc, out, err = self.runner.capture([self.agent, "-s", "-a", self.sock, "-t", str(int(self.lifetime))])
        match = re.search(r"SSH_AGENT_PID=(\d+)", out or "")
        if rc != 0 or not match:
            return "cannot start ssh-agent (rc=%d): %s" % (rc, ((err or out or "").strip().splitlines() or ["no output"])[-1])
        self.pid = int(match.group(1))
        rc, out, err = self.runner.capture([self.add, "-q", "-"], env={"SSH_AUTH_SOCK": self.sock},
                                           data=key_text.rstrip("\n") + "\n")
        if rc != 0:
            self.close()
            return "ssh-add refused the private key (rc=%d): %s" % (rc, ((err or "").strip().splitlines() or ["no output"])[-1])
        return None

    def ssh_options(self):
        """ssh -o values that make ssh use this agent and nothing else."""
        return ["IdentityAgent=%s" % self.sock, "IdentityFile=none"]

    def close(self, wait=3.0):
        """Kill the agent and wait (up to ``wait`` seconds, then SIGKILL) until it is gone: when this returns,
        no process holds the key any more."""
        pid, self.pid = self.pid, None
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
            deadline = time.monotonic() + wait
            while not _process_gone(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not _process_gone(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            os.unlink(self.sock)
        except OSError:
            pass


def _process_gone(pid):
    """True when ``pid`` no longer runs (exited, or a zombie waiting to be reaped by its new parent)."""
    try:
        with open("/proc/%d/stat" % pid, "r", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return True
    return False
