"""Parallel runs of the integration tests (pytest-xdist, ``make integration``: ``-n 2 --dist loadgroup``).

What the test files share and how it is kept apart (docs/performance.md, "Test-suite time"):

* one xdist group per test file unless the file names one itself (``pytestmark = pytest.mark.xdist_group``, read
  from the file by ``group_of``; the scheduler below replaces xdist's, see there why):
  module-scoped fixtures (a fleet, an SDK container with a fixed name such as ``kiln-binhost-test``) then run
  once, on one worker, as in a serial run. Files that must not overlap share a named group
  (``qemu``: test_boot_check.py and test_standin_disk.py both run prepare_assets.sh, whose ``apt-get update``
  on the private lists under /var/cache/kiln-test takes apt's lock, and both boot QEMU under TCG, which is
  CPU-bound: one boot-heavy file at a time while fleet and SDK tests use the other worker);
* the heaviest groups are dispatched first (``GROUP_SECONDS``, from ``--durations`` of serial runs) so that
  a long group does not start last; run with ``--no-loadscope-reorder`` so xdist keeps this order;
* every worker gets its own short TMPDIR (``/tmp/kx<N>-XXXXXX``): tests that compare ``kiln-boot-*``
  directories or logs under ``$TMPDIR/kiln-<uid>`` before and after a run only see their own worker's;
* fleets (tests/fleet/harness.py) take random ids and claim their subnet atomically (the root-ns blackhole
  route), SDK images are built under a lock (tests/standin_sdk/fixture.py ``ensure_sdk_image``), TCP ports
  are port 0 or inside a fleet's own network namespace, container names are unique per file.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

# Seconds per group in a serial run on 2 cores (CI --durations and per-file runs); unlisted: 10.
GROUP_SECONDS = {
    "qemu": 560, "test_pipeline_fleet": 700, "test_hotfix_fleet": 450, "test_execution_environment": 300,
    "test_build": 190, "test_molecule": 130, "test_standin_sdk": 110, "test_roles_builder_cache": 75,
    "test_standin_packages": 60, "test_publish": 60, "test_fleet_harness": 50, "test_sdk_check_mode": 50,
    "test_image_attempts": 35, "test_standin_fidelity": 30, "test_signing": 30, "test_demo_clean": 25,
}

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
WORKER_TMP = None
if WORKER:
    # before the test modules are imported (some read tempfile.gettempdir() at import time)
    WORKER_TMP = tempfile.mkdtemp(prefix="kx%s-" % WORKER.replace("gw", ""), dir="/tmp")
    os.environ["TMPDIR"] = WORKER_TMP
    tempfile.tempdir = WORKER_TMP


_MARK_RE = re.compile(r"""^pytestmark\b.{0,400}?xdist_group\(\s*(?:name\s*=\s*)?["']([\w.-]+)["']""", re.M | re.S)
_GROUPS = {}


def group_of(path):
    """The xdist group of a test: the ``xdist_group`` name in its file's ``pytestmark``, else the file.

    pytest 9.2 derives ``Item.nodeid`` from a structured id, so xdist 3.8's ``--dist loadgroup`` (which appends
    ``@<group>`` to ``item._nodeid`` in the workers) no longer groups anything: every test was scheduled on its
    own and the module fixtures of one file ran on both workers (seen: test_build.py's two workers removing each
    other's SDK container). The controller does not collect, so it reads the mark from the file itself.
    """
    path = str(path)
    if path not in _GROUPS:
        group = os.path.splitext(os.path.basename(path))[0]
        try:
            with open(path, encoding="utf-8") as fh:
                found = _MARK_RE.search(fh.read())
            if found:
                group = found.group(1)
        except OSError:
            pass
        _GROUPS[path] = group
    return _GROUPS[path]


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: whole groups (files, or the named groups) per work unit, in collection order."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return group_of(os.path.join(str(config.rootpath), nodeid.split("::", 1)[0]))

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """In a worker: heaviest groups first (the workers' collection order is the controller's work queue)."""
    if not WORKER:
        return
    keyed = []
    first = {}
    for index, item in enumerate(items):
        group = group_of(item.path)
        first.setdefault(group, index)
        keyed.append((-GROUP_SECONDS.get(group, 10), first[group], index, item))
    items[:] = [k[-1] for k in sorted(keyed, key=lambda k: k[:3])]


def pytest_sessionfinish(session):
    if WORKER_TMP and os.path.isdir(WORKER_TMP):
        subprocess.run(["rm", "-rf", "--one-file-system", "--", WORKER_TMP], capture_output=True, check=False)
