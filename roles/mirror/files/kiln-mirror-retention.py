# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kiln mirror retention: keep the newest N versions in every board directory of a mirror.

A board directory is a directory named like a board (--board, default amd64-usr and arm64-usr) at most
four levels below --root, e.g. <root>/stable/amd64-usr or <root>/update/amd64-usr. Version directories
are ordered like Flatcar versions (numeric MAJOR.MINOR.PATCH, a build id sorts before the plain
release). Never deleted: whatever a `current` symlink points at in *any* board directory with the same
board name (so update payloads of the current release survive), dot entries (staging), symlinks,
and names that are not Flatcar versions. Prints one JSON object; --dry-run deletes nothing.
"""

import argparse
import json
import os
import re
import shutil
import sys

VERSION_RE = re.compile(r"^(?:[a-z]+-)?([0-9]+)\.([0-9]+)\.([0-9]+)(?:[-+]([A-Za-z0-9._+-]+))?$")


def version_key(name):
    m = VERSION_RE.match(name)
    if not m:
        return None
    nums = tuple(int(x) for x in m.groups()[:3])
    build = m.group(4)
    return nums + ((1, "") if not build else (0, build))


def board_dirs(root, boards, depth=4):
    found = []
    root = os.path.abspath(root)
    base_depth = root.rstrip("/").count("/")
    for current, dirs, _files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(current, d)))
        if os.path.basename(current) in boards and current != root:
            found.append(current)
            dirs[:] = []  # versions below are not board dirs
            continue
        if current.count("/") - base_depth >= depth:
            dirs[:] = []
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--keep", type=int, default=5)
    ap.add_argument("--board", action="append", dest="boards")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    if args.keep < 1:
        ap.error("--keep must be at least 1")
    boards = args.boards or ["amd64-usr", "arm64-usr"]
    dirs = board_dirs(args.root, boards)
    protected = {}
    for d in dirs:
        link = os.path.join(d, "current")
        if os.path.islink(link):
            protected.setdefault(os.path.basename(d), set()).add(os.readlink(link).rstrip("/"))
    removed, kept = [], []
    for d in dirs:
        versions = []
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if name.startswith(".") or os.path.islink(path) or not os.path.isdir(path):
                continue
            key = version_key(name)
            if key is not None:
                versions.append((key, name))
        versions.sort(reverse=True)
        keep = set(n for _k, n in versions[: args.keep]) | protected.get(os.path.basename(d), set())
        for _key, name in versions:
            path = os.path.join(d, name)
            if name in keep:
                kept.append(path)
                continue
            removed.append(path)
            if not args.dry_run:
                shutil.rmtree(path)
    json.dump({"changed": bool(removed) and not args.dry_run, "dry_run": args.dry_run, "removed": removed,
               "kept": kept, "board_dirs": dirs, "protected": dict((k, sorted(v)) for k, v in protected.items())},
              sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
