#!/usr/bin/env bash
# ansible-test needs the collection at .../ansible_collections/kiln/flatcar: copy the tracked and new
# (not ignored) files there and run ansible-test in that copy.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEST="$REPO/build/ansible-test/ansible_collections/kiln/flatcar"
mkdir -p "$DEST"
cd "$REPO"
git ls-files -co --exclude-standard -z | rsync -a --delete --ignore-missing-args --from0 --files-from=- ./ "$DEST/"
# drop files that were deleted from the work tree (or left by another branch); keep ansible-test's output
LIST=$(mktemp)
trap 'rm -f "$LIST"' EXIT
git ls-files -co --exclude-standard | sort > "$LIST"
cd "$DEST"
find . -path ./tests/output -prune -o -path ./.git -prune -o \( -type f -o -type l \) -printf '%P\n' | sort | comm -23 - "$LIST" |
    while IFS= read -r stale; do rm -f -- "$stale"; done
git init -q 2>/dev/null || true
echo "$DEST"
