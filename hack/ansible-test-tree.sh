#!/usr/bin/env bash
# ansible-test needs the collection at .../ansible_collections/kiln/flatcar: copy the tracked and new
# (not ignored) files there and run ansible-test in that copy.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEST="$REPO/build/ansible-test/ansible_collections/kiln/flatcar"
mkdir -p "$DEST"
cd "$REPO"
git ls-files -co --exclude-standard -z | rsync -a --delete --ignore-missing-args --from0 --files-from=- ./ "$DEST/"
# drop files that were deleted from the work tree
cd "$DEST"
git init -q 2>/dev/null || true
echo "$DEST"
