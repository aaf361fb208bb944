# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Flatcar-compatible ``.DIGESTS`` files, computed in one read pass per file.

``create_digests`` in flatcar/scripts ``ci-automation/ci_automation_common.sh`` writes, for each hash
type md5, sha1 and sha512 in that order::

    echo "# ${hash_type} HASH" | tr "a-z" "A-Z"      ->  "# MD5 HASH\\n"
    echo "${output%% *}  ${fbn}"                      ->  "<hex>  <basename>\\n"

no blank lines, no trailing extras. ``output`` is the first field of ``<type>sum <file>``; coreutils
prefixes that field with a backslash when the file name holds a backslash or a newline, which is
reproduced here. kiln also computes sha256 in the same pass (for the build record).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time

CHUNK = 4 * 1024 * 1024
DIGESTS_SUFFIX = ".DIGESTS"
# create_digests: list_files ... 'asc,gpg,sig,DIGESTS'
SKIP_SUFFIXES = (".asc", ".gpg", ".sig", ".DIGESTS")
SECTIONS = (("md5", "# MD5 HASH"), ("sha1", "# SHA1 HASH"), ("sha512", "# SHA512 HASH"))


class DigestsError(Exception):
    """A DIGESTS problem; the message is one line."""


# Below this size one thread hashes everything: starting threads would cost more than it saves.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
_COSTS = {}


def _cost(name):
    """Seconds per MiB of one algorithm on this machine, measured once per process on 1 MiB."""
    if name not in _COSTS:
        block = b"\0" * (1024 * 1024)
        h = hashlib.new(name)
        start = time.perf_counter()
        h.update(block)
        _COSTS[name] = max(time.perf_counter() - start, 1e-6)
    return _COSTS[name]


def plan_groups(algorithms, workers):
    """Split ``algorithms`` into at most ``workers`` groups of about equal measured cost (greedy, costliest first)."""
    groups = [[] for _i in range(max(1, min(workers, len(algorithms))))]
    loads = [0.0] * len(groups)
    for name in sorted(algorithms, key=_cost, reverse=True):
        i = loads.index(min(loads))
        groups[i].append(name)
        loads[i] += _cost(name)
    return [g for g in groups if g]


def _worker(hashers, chunks):
    while True:
        block = chunks.get()
        if block is None:
            return
        for h in hashers:
            h.update(block)  # hashlib releases the GIL for blocks over 2 KiB: the groups run on all cores


def hash_file(path, algorithms=("md5", "sha1", "sha512", "sha256"), chunk=CHUNK, workers=None):
    """Hex digests of ``path`` for every algorithm, reading the file exactly once.

    Large files are hashed by several threads at once, one group of algorithms each (groups of equal
    measured cost, at most one per CPU): the file is read once, each block goes to every group.
    """
    hashers = dict((name, hashlib.new(name)) for name in algorithms)
    if workers is None:
        workers = os.cpu_count() or 1
    try:
        size_hint = os.stat(path).st_size
    except OSError:
        size_hint = 0
    groups = plan_groups(list(algorithms), workers) if workers > 1 and size_hint >= PARALLEL_MIN_BYTES else [list(algorithms)]
    mine = [hashers[n] for n in groups[0]]
    threads = []
    for group in groups[1:]:
        q = queue.Queue(maxsize=8)
        t = threading.Thread(target=_worker, args=([hashers[n] for n in group], q), daemon=True)
        t.start()
        threads.append((t, q))
    size = 0
    try:
        with open(path, "rb", buffering=0) as fh:
            while True:
                block = fh.read(chunk)  # a fresh bytes object per block: no buffer is reused under a worker
                if not block:
                    break
                size += len(block)
                for _t, q in threads:
                    q.put(block)
                for h in mine:
                    h.update(block)
    finally:
        for _t, q in threads:
            q.put(None)
        for t, _q in threads:
            t.join()
    result = dict((name, h.hexdigest()) for name, h in hashers.items())
    result["size"] = size
    return result


def _sum_field(hexdigest, basename):
    # coreutils escapes names with '\\' or '\n' and marks the line with a leading backslash
    if "\\" in basename or "\n" in basename:
        return "\\" + hexdigest
    return hexdigest


def render(basename, hashes):
    """The exact bytes ``create_digests`` writes for a file called ``basename``."""
    lines = []
    for algo, header in SECTIONS:
        lines.append(header)
        lines.append("%s  %s" % (_sum_field(hashes[algo], basename), basename))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def digests_path(path):
    return path + DIGESTS_SUFFIX


def is_signable(path):
    return not path.endswith(SKIP_SUFFIXES)


def parse(text):
    """{algorithm: [(hex, name), ...]} from DIGESTS text (also accepts the clear text of a .asc)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    headers = dict((h, a) for a, h in SECTIONS)
    headers.update({"# SHA256 HASH": "sha256", "# B2 HASH": "b2"})
    found = {}
    current = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            current = headers.get(line.strip())
            if current is None:
                current = line.strip()[2:].split()[0].lower()
            continue
        if current is None:
            raise DigestsError("hash line before any '# <TYPE> HASH' header")
        parts = line.split("  ", 1)
        if len(parts) != 2:
            raise DigestsError("malformed digest line %r" % line[:80])
        found.setdefault(current, []).append((parts[0].lstrip("\\"), parts[1]))
    return found


def check(text, basename, hashes):
    """None when every md5/sha1/sha512 line for ``basename`` in ``text`` matches ``hashes``, else a reason."""
    try:
        parsed = parse(text)
    except DigestsError as exc:
        return str(exc)
    checked = 0
    for algo in ("md5", "sha1", "sha512", "sha256"):
        for hexdigest, name in parsed.get(algo, []):
            if name != basename:
                continue
            if algo not in hashes:
                continue
            checked += 1
            if hexdigest.lower() != hashes[algo]:
                return "%s digest does not match" % algo.upper()
    if not checked:
        return "no digest for %s" % basename
    return None


def clearsigned_text(armored):
    """The signed text of an OpenPGP clearsigned message (dash-escaping removed), or None."""
    if isinstance(armored, bytes):
        armored = armored.decode("utf-8", "surrogateescape")
    lines = armored.splitlines()
    try:
        start = lines.index("-----BEGIN PGP SIGNED MESSAGE-----")
    except ValueError:
        return None
    i = start + 1
    while i < len(lines) and lines[i].strip():  # armor headers (Hash: ...)
        i += 1
    i += 1
    body = []
    while i < len(lines) and lines[i] != "-----BEGIN PGP SIGNATURE-----":
        line = lines[i]
        body.append(line[2:] if line.startswith("- ") else line)
        i += 1
    if i >= len(lines):
        return None
    return "\n".join(body) + "\n"


def write_atomic(path, data, mode=0o644):
    tmp = "%s.kiln-tmp-%d" % (path, os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def recorded_files(record_data, skip_roles=("signature",)):
    """{relative path: output entry} over every stage of a record, later stages winning."""
    found = {}
    stages = record_data.get("stages", {})
    order = list(record_data.get("stage_order", [])) + [n for n in stages if n not in record_data.get("stage_order", [])]
    for name in order:
        stage = stages.get(name) or {}
        for out in stage.get("outputs", []):
            if out.get("role") in skip_roles:
                continue
            entry = dict(out)
            entry["stage"] = name
            found[out["path"]] = entry
    return found
