"""Shared helpers for kiln's tests: the collection on sys.path, running real ansible-playbook
and collecting every task result through a test-only JSONL callback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "build")
COLLECTIONS = os.path.join(BUILD, "collections")
CALLBACKS = os.path.join(REPO, "tests", "integration", "callback_plugins")
VENV_BIN = os.path.dirname(sys.executable)


def ensure_collection_path():
    """build/collections/ansible_collections/kiln/flatcar -> the work tree (for imports and Ansible)."""
    link = os.path.join(COLLECTIONS, "ansible_collections", "kiln", "flatcar")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.exists(link):
            raise RuntimeError("%s exists and is not a symlink" % link)
        try:
            os.symlink(REPO, link)
        except FileExistsError:  # another process (a parallel test worker) made it just now
            if not os.path.islink(link):
                raise
    if COLLECTIONS not in sys.path:
        sys.path.insert(0, COLLECTIONS)
    return COLLECTIONS


def ansible_env(extra=None, events=None):
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=ensure_collection_path(),
        ANSIBLE_CALLBACK_PLUGINS=CALLBACKS,
        ANSIBLE_CALLBACKS_ENABLED="kiln_jsonl",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        PATH=VENV_BIN + os.pathsep + env.get("PATH", ""),
    )
    if events:
        env["KILN_TEST_EVENTS"] = events
    if extra:
        env.update(extra)
    return env


class PlaybookRun:
    def __init__(self, proc, events_path):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.events = []
        if os.path.exists(events_path):
            with open(events_path, encoding="utf-8") as fh:
                self.events = [json.loads(line) for line in fh if line.strip()]
        self.stats = next((e["stats"] for e in self.events if e["event"] == "stats"), {})

    def results(self, task=None, host=None, event=None):
        out = []
        for e in self.events:
            if e["event"] == "stats":
                continue
            if task is not None and e.get("task") != task:
                continue
            if host is not None and e.get("host") != host:
                continue
            if event is not None and e["event"] != event:
                continue
            out.append(e)
        return out

    def result(self, task, host=None):
        found = [e for e in self.results(task, host) if e["event"] in ("ok", "failed", "skipped", "unreachable")]
        if not found:
            raise AssertionError("no result for task %r\n%s\n%s" % (task, self.stdout[-4000:], self.stderr[-2000:]))
        return found[-1]["result"]

    def changed_total(self):
        return sum(h.get("changed", 0) for h in self.stats.values())

    def failed_total(self):
        return sum(h.get("failures", 0) + h.get("unreachable", 0) for h in self.stats.values())

    def __repr__(self):
        return "PlaybookRun(rc=%s, stats=%s)" % (self.rc, self.stats)


def run_playbook(playbook, inventory="localhost,", extra_vars=None, check=False, env=None, args=(), cwd=None,
                 timeout=1800, prefix=None):
    fd, events = tempfile.mkstemp(prefix="kiln-events-", suffix=".jsonl")
    os.close(fd)
    cmd = list(prefix or []) + [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, playbook]
    if inventory == "localhost,":
        cmd += ["-c", "local", "-e", "ansible_python_interpreter=" + sys.executable]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    cmd += list(args)
    proc = subprocess.run(cmd, env=ansible_env(env, events), cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)
    run = PlaybookRun(proc, events)
    os.unlink(events)
    return run


def run_module(module, args, check=False, env=None, timeout=1800, task_env=None):
    """Run one module on localhost through a real ansible-playbook; return (result, PlaybookRun).
    ``task_env`` becomes the task's ``environment:`` (the module's own environment)."""
    with tempfile.TemporaryDirectory(prefix="kiln-pb-") as tmp:
        pb = os.path.join(tmp, "pb.yml")
        with open(pb, "w", encoding="utf-8") as fh:
            json.dump([{"hosts": "localhost", "gather_facts": False,
                        "tasks": [dict({"name": "kiln under test", module: args},
                                       **({"environment": task_env} if task_env else {}))]}], fh)
        run = run_playbook(pb, check=check, env=env, timeout=timeout)
    return run.result("kiln under test"), run


# The real flatcar/scripts (read-only reference data, never copied into the repo). Tests that run the real
# lib/shflags or read the real sources skip with VENDOR_SKIP in a clone without it.
VENDOR_SKIP = "needs ../shared/vendor (flatcar/scripts); point KILN_VENDOR_DIR at a checkout: make test KILN_VENDOR_DIR=/path"


def vendor_dir():
    """``$KILN_VENDOR_DIR`` or ``<repo>/../shared/vendor`` (may not exist)."""
    return os.environ.get("KILN_VENDOR_DIR") or os.path.join(os.path.dirname(REPO), "shared", "vendor")


def flatcar_scripts_dir():
    """The real flatcar/scripts tree: ``<vendor>/flatcar-scripts``, or KILN_VENDOR_DIR itself when it is a
    scripts checkout. None when it is not there."""
    base = vendor_dir()
    for cand in (os.path.join(base, "flatcar-scripts"), base):
        if os.path.isfile(os.path.join(cand, "lib", "shflags", "shflags")):
            return cand
    return None


def fs_snapshot(roots, volatile_roots=()):
    """(type, size, mtime) of every entry under each of ``roots`` (missing roots are recorded as absent),
    and of each root itself; for a root in ``volatile_roots`` (e.g. TMPDIR, where gpg makes and removes a
    scratch directory) its own mtime is left out. Compare two snapshots with ``fs_changes``."""
    seen = {}
    for root in roots:
        root = str(root)
        if not os.path.lexists(root):
            seen[root] = None
            continue
        for top, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(top, name)
                st = os.lstat(path)
                seen[path] = (st.st_mode >> 12, st.st_size, st.st_mtime_ns)
        st = os.lstat(root)
        seen[root] = (st.st_mode >> 12, None if root in [str(v) for v in volatile_roots] else st.st_mtime_ns)
    return seen


def fs_changes(before, after):
    """Paths added, removed or changed between two ``fs_snapshot`` results."""
    return sorted(set(before) ^ set(after)) + sorted(p for p in before if p in after and before[p] != after[p])
