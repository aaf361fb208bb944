#!/usr/bin/env python
"""One-pass DIGESTS (kiln) against Flatcar's create_digests way: three sequential coreutils passes.

    python bench/bench_digests.py [--size-mib 1024] [--dir /var/tmp]

Creates a file of random data under --dir, warms the page cache, times
  * kiln: _digests.hash_file (md5 + sha1 + sha512 + sha256 in one read, one thread per CPU, groups of
    algorithms of equal cost) + render,
  * kiln with one thread (workers=1: the previous implementation's cost),
  * coreutils: md5sum, sha1sum, sha512sum one after the other (what create_digests runs),
checks all give the same DIGESTS bytes, prints the ratios and the machine's single-core hash throughputs
(so the physical limit is visible: one pass can be no faster than the costliest group of algorithms, nor
than the sum of all hash costs divided by the cores) and removes the file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from kiln_testlib import ensure_collection_path  # noqa: E402

ensure_collection_path()
from ansible_collections.kiln.flatcar.plugins.module_utils import _digests  # noqa: E402


def make_file(directory, size):
    fd, path = tempfile.mkstemp(prefix="kiln-bench-digests-", suffix=".bin", dir=directory)
    block = os.urandom(16 * 1024 * 1024)
    with os.fdopen(fd, "wb") as fh:
        left = size
        while left > 0:
            fh.write(block[:min(left, len(block))])
            left -= len(block)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    path = make_file(args.dir, args.size_mib * 1024 * 1024)
    try:
        subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)  # hot cache for both sides
        probe = os.urandom(64 * 1024 * 1024)
        speed = {}
        for algo in ("md5", "sha1", "sha512", "sha256"):
            h = hashlib.new(algo)
            t0 = time.perf_counter()
            h.update(probe)
            speed[algo] = 64 / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        serial = _digests.render(os.path.basename(path), _digests.hash_file(path, workers=1))
        one_thread = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = _digests.render(os.path.basename(path), _digests.hash_file(path))
        one_pass = time.perf_counter() - t0
        t0 = time.perf_counter()
        lines = []
        for algo in ("md5", "sha1", "sha512"):
            out = subprocess.run([algo + "sum", path], check=True, capture_output=True, text=True).stdout
            lines += ["# %s HASH" % algo.upper(), "%s  %s" % (out.split(" ", 1)[0], os.path.basename(path))]
        three = time.perf_counter() - t0
        theirs = ("\n".join(lines) + "\n").encode()
        if ours != theirs or serial != theirs:
            print("MISMATCH between kiln and coreutils DIGESTS", file=sys.stderr)
            return 1
        cpus = os.cpu_count() or 1
        groups = _digests.plan_groups(["md5", "sha1", "sha512", "sha256"], cpus)
        mib = float(args.size_mib)
        limit = max(max(sum(mib / speed[a] for a in g) for g in groups), sum(mib / v for v in speed.values()) / cpus)
        print("file: %d MiB in %s; %d CPUs" % (args.size_mib, args.dir, cpus))
        print("single-core throughput (MiB/s): " + ", ".join("%s %.0f" % (a, speed[a]) for a in ("md5", "sha1", "sha512", "sha256")))
        print("thread groups: " + " | ".join("+".join(g) for g in groups))
        print("one-pass DIGESTS: %.2f s; one thread: %.2f s; coreutils 3 passes: %.2f s" % (one_pass, one_thread, three))
        print("ratio coreutils / one-pass = %.2f (goal >= 2); one thread / one-pass = %.2f" % (three / one_pass, one_thread / one_pass))
        print("physical limit of the hashes on %d cores: %.2f s; one-pass / limit = %.2f" % (cpus, limit, one_pass / limit))
        return 0
    finally:
        os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
