# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""The one runner every kiln module uses to call an external command.

* argv is always an explicit list, never a shell string;
* the child's environment is built from an allow-list, never inherited wholesale;
* the child's stdout and stderr are appended to a log file on the target host and never held in
  memory, so hours of SDK output cost nothing in RAM and survive the Ansible connection
  (safe under ``async`` + ``poll: 0``);
* a failure returns one line plus ``rc``, ``cmd``, ``log_path`` and the last lines of the log.

Secrets never go through this runner's argv or environment: pass them as ``data`` (stdin).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shlex
import shutil
import subprocess
import time

# Names that may cross from the module's environment into a child. Everything else is dropped.
BASE_ENV_ALLOW = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TERM",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "TZ",
    "DOCKER_HOST",
    "CONTAINER_HOST",
    "SSH_AUTH_SOCK",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)

# The variables the real SDK passes into its container through sdk_container/.sdkenv
# (flatcar/scripts sdk_lib/sdk_container_common.sh, setup_sdk_env).
SDK_ENV_PASSTHROUGH = (
    "FLATCAR_BUILD_ID",
    "COREOS_OFFICIAL",
    "EMAIL",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_PROXY_COMMAND",
    "GIT_SSH",
    "RSYNC_PROXY",
    "GPG_AGENT_INFO",
    "USE",
    "FEATURES",
    "PORTAGE_USERNAME",
    "FORCE_STAGES",
    "SIGNER",
    "SBSIGN_KEY",
    "SBSIGN_CERT",
    "SBSIGN_DB_KEY",
    "SBSIGN_DB_CERT",
    "SHIM_SIGNING_CERTIFICATE",
    "MODULE_SIGNING_KEY_DIR",
    "SYSEXT_SIGNING_KEY_DIR",
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Appends the child's stdout+stderr to the log named in $1 and replaces itself with the command.
_LOG_WRAPPER = 'log="$1"; shift; exec "$@" >>"$log" 2>&1 </dev/null'
_LOG_WRAPPER_STDIN = 'log="$1"; shift; exec "$@" >>"$log" 2>&1'


class RunResult:
    """What a finished command left behind."""

    __slots__ = ("rc", "cmd", "log_path", "duration")

    def __init__(self, rc, cmd, log_path, duration):
        self.rc = rc
        self.cmd = cmd
        self.log_path = log_path
        self.duration = duration

    @property
    def ok(self):
        return self.rc == 0


def tail_lines(path, count=40, max_bytes=65536):
    """Return the last ``count`` lines of a file without reading it whole."""
    if not path:
        return []
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            chunk = fh.read()
    except OSError:
        return []
    text = chunk.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line is probably cut
    return lines[-count:]


# Log lines that mean the fix is on the host, not in the build inputs.
_DIAGNOSES = (
    ("No space left on device", "disk full on the builder (free space under the checkout's __build__ directory and rerun)"),
    ("Disk quota exceeded", "disk quota exceeded on the builder (raise the quota or free space, then rerun)"),
    ("Cannot connect to the Docker daemon", "the Docker daemon is not running on the builder (start it and rerun)"),
    ("Cannot allocate memory", "the builder ran out of memory (add memory or lower the parallelism, then rerun)"),
)


def diagnose(lines):
    """A one-line cause when a log tail shows a host problem, else ''."""
    for line in reversed(lines):
        for needle, text in _DIAGNOSES:
            if needle in line:
                return text
    return ""


def build_env(allow=(), explicit=None, source=None):
    """Return the child environment: allow-listed names from ``source`` plus ``explicit`` values."""
    source = os.environ if source is None else source
    env = {}
    for name in tuple(BASE_ENV_ALLOW) + tuple(allow):
        if name in source:
            env[name] = source[name]
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LC_ALL", "C.UTF-8")
    for key, value in (explicit or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def format_cmd(argv):
    return " ".join(shlex.quote(str(a)) for a in argv)


class Runner:
    """Run external commands for a module, streaming their output to a log file."""

    def __init__(self, module, log_path=None, env_allow=(), env=None, cwd=None, fail_extra=None, on_failure=None):
        self.module = module
        self.log_path = log_path
        self.env_allow = tuple(env_allow)
        self.env = dict(env or {})
        self.cwd = cwd
        # Extra keys merged into every fail_json (for example the stage name).
        self.fail_extra = dict(fail_extra or {})
        # Called with (msg, result) before fail_json: lets a module mark its build-record stage failed.
        self.on_failure = on_failure
        if log_path:
            parent = os.path.dirname(log_path)
            if parent and not os.path.isdir(parent):
                os.makedirs(parent, exist_ok=True)

    # -- logging -----------------------------------------------------------------------------
    def note(self, text):
        """Write a kiln line into the log (never put secrets here)."""
        if not self.log_path:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                for line in str(text).splitlines() or [""]:
                    fh.write("### kiln %s %s\n" % (stamp, line))
        except OSError:
            pass  # a full disk must not hide the real failure

    def log_tail(self, count=40):
        return tail_lines(self.log_path, count)

    # -- running -----------------------------------------------------------------------------
    def _env_argv(self, env):
        child_env = build_env(self.env_allow, dict(self.env, **(env or {})))
        return ["/usr/bin/env", "-i"] + ["%s=%s" % (k, v) for k, v in sorted(child_env.items())]

    def _exec(self, full, data, cwd):
        """``module.run_command`` as every call here makes it: argv only, no expansion, stdin ``data``."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        return self.module.run_command(full, cwd=cwd or self.cwd, data=data, binary_data=True, expand_user_and_vars=False,
                                       check_rc=False)

    def run(self, argv, env=None, data=None, check=True, cwd=None, msg=None, log_path=None):
        """Run ``argv`` with its output appended to the log; return a RunResult.

        ``data`` (bytes or str) is written to the child's stdin: the only way secrets may travel.
        With ``check`` a non-zero rc fails the module with ``msg`` (one line).
        """
        argv = [str(a) for a in argv]
        log = log_path or self.log_path
        if not log:
            raise ValueError("Runner.run needs a log_path")
        if log == self.log_path:
            self.note("$ " + format_cmd(argv))
        wrapper = _LOG_WRAPPER_STDIN if data is not None else _LOG_WRAPPER
        start = time.monotonic()
        rc, _out, err = self._exec(["/bin/sh", "-c", wrapper, "kiln-run", log] + self._env_argv(env) + argv, data, cwd)
        duration = round(time.monotonic() - start, 3)
        if err and log:
            # Only the wrapper itself can write here (e.g. the log file could not be opened).
            try:
                with open(log, "a", encoding="utf-8", errors="replace") as fh:
                    fh.write(err if isinstance(err, str) else err.decode("utf-8", "replace"))
            except OSError:
                pass
        if log == self.log_path:
            self.note("rc=%d after %.1fs" % (rc, duration))
        result = RunResult(rc, argv, log, duration)
        if check and rc != 0:
            self._fail_run(result, msg)
        return result

    def _fail_run(self, result, msg=None):
        """Fail the module for a command that returned non-zero: ``msg`` (or the program and rc), led by the hint
        that ``diagnose`` finds in the end of its log."""
        msg = msg or "%s failed with rc=%d" % (os.path.basename(result.cmd[0]), result.rc)
        hint = diagnose(tail_lines(result.log_path, 200))
        self.fail(hint + ": " + msg if hint else msg, result=result)

    def run_all(self, calls, workers=None, check=True):
        """Run independent commands at once, at most ``workers`` (default: the CPU count) at a time.

        ``calls`` is a list of dicts with the keywords of ``run()`` (``argv``, and optionally ``env``, ``data``,
        ``cwd``, ``msg``). Each command writes to its own part of the log while it runs; when all have ended, the
        parts join the main log in call order (each with its ``$ command`` and ``rc`` lines), so the log reads as
        if they had run one after the other. Returns the RunResults in call order. With ``check``, the first
        failed call (in call order) fails the module with its ``msg``, after every command has ended.
        """
        if not self.log_path:
            raise ValueError("Runner.run_all needs a log_path")
        if not calls:
            return []
        workers = max(1, min(len(calls), workers or os.cpu_count() or 1))
        parts = ["%s.part-%d-%d" % (self.log_path, os.getpid(), i) for i in range(len(calls))]

        def one(i):
            call = dict(calls[i])
            return self.run(call.pop("argv"), check=False, log_path=parts[i],
                            **dict((k, v) for k, v in call.items() if k in ("env", "data", "cwd")))

        results = []
        try:
            if workers == 1:
                results = [one(i) for i in range(len(calls))]
            else:
                with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                    results = list(pool.map(one, range(len(calls))))
        finally:
            self._join_parts(parts, calls, results)
        for i, result in enumerate(results):
            result.log_path = self.log_path
            if check and result.rc != 0:
                self._fail_run(result, calls[i].get("msg"))
        return results

    def _join_parts(self, parts, calls, results):
        """Append each part log to the main log in call order (and remove it), on every way out of run_all."""
        for i, part in enumerate(parts):
            if i < len(results):
                self.note("$ " + format_cmd(results[i].cmd))
            elif os.path.exists(part):
                self.note("$ " + format_cmd([str(a) for a in calls[i]["argv"]]))
            else:
                continue
            try:
                with open(part, "rb") as src, open(self.log_path, "ab") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
            except OSError:
                pass  # a part that was never written (the wrapper could not start)
            with contextlib.suppress(OSError):
                os.unlink(part)
            if i < len(results):
                self.note("rc=%d after %.1fs" % (results[i].rc, results[i].duration))

    def capture(self, argv, env=None, data=None, cwd=None, check=False, msg=None):
        """Run a short command and return ``(rc, stdout, stderr)`` as text (for small outputs only)."""
        argv = [str(a) for a in argv]
        rc, out, err = self._exec(self._env_argv(env) + argv, data, cwd)
        if check and rc != 0:
            line = (err or out or "").strip().splitlines()
            detail = line[-1] if line else ""
            self.fail(
                (msg or "%s failed with rc=%d" % (os.path.basename(argv[0]), rc)) + (": " + detail if detail else ""),
                result=RunResult(rc, argv, None, 0),
                stderr=err,
            )
        return rc, out, err

    def fail(self, msg, result=None, **extra):
        """Fail the module with one line and the structured context."""
        msg = " ".join(str(msg).split())  # exactly one line
        payload = dict(self.fail_extra)
        payload.update(extra)
        if result is not None:
            payload.setdefault("rc", result.rc)
            payload.setdefault("cmd", result.cmd)
            if result.log_path:
                payload.setdefault("log_path", result.log_path)
                payload.setdefault("log_tail", tail_lines(result.log_path))
        elif self.log_path:
            payload.setdefault("log_path", self.log_path)
            payload.setdefault("log_tail", self.log_tail())
        if self.on_failure is not None:
            callback, self.on_failure = self.on_failure, None  # never recurse
            try:
                callback(msg, payload)
            except Exception as exc:  # pylint: disable=broad-except
                payload["record_error"] = str(exc)
        self.module.fail_json(msg=msg, **payload)

    @contextlib.contextmanager
    def stdout_stream(self, argv, env=None, msg=None):
        """Start ``argv`` with its stdout as a pipe the caller reads in chunks (stderr goes to the log), for
        data too large to hold in memory (e.g. ``zstd -dc`` into the Docker SDK's image load). On leaving the
        block the child is waited for (killed first if the block stopped early or raised); a non-zero rc
        fails the module with ``msg``."""
        argv = [str(a) for a in argv]
        self.note("$ " + format_cmd(argv) + " | (read by the module)")
        log = open(self.log_path or os.devnull, "ab")  # pylint: disable=consider-using-with
        proc = subprocess.Popen(self._env_argv(env) + argv, stdin=subprocess.DEVNULL,  # pylint: disable=consider-using-with,ansible-bad-function
                                stdout=subprocess.PIPE, stderr=log, cwd=self.cwd)
        start = time.monotonic()
        finished = False
        try:
            yield proc.stdout
            finished = True
        finally:
            proc.stdout.close()
            if not finished and proc.poll() is None:
                proc.kill()
            rc = proc.wait()
            log.close()
        self.note("rc=%d after %.1fs" % (rc, time.monotonic() - start))
        if rc != 0:
            self.fail(msg or "%s failed with rc=%d" % (os.path.basename(argv[0]), rc),
                      result=RunResult(rc, argv, self.log_path, round(time.monotonic() - start, 3)))


def which(module, name, required=False, msg=None):
    """Locate a program like the shell would, failing with one line when it must exist."""
    path = module.get_bin_path(name, required=False)
    if path is None and required:
        module.fail_json(msg=msg or "%s not found on %s: install it or put it on PATH" % (name, "the target host"))
    return path
