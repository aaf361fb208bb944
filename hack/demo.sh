#!/usr/bin/env bash
# kiln demo: the whole pipeline (build -> boot check -> sign -> publish) on a throwaway local fleet of
# network namespaces, against the STAND-IN SDK (a test fixture imitating the Flatcar SDK's CLI; the real SDK
# is a 6 GB container and hours of compiling). Ends with the mirror served on 127.0.0.1 and the run summary.
#
#   sudo hack/demo.sh up      # a few minutes; needs root, docker (started if needed) and the venv
#   sudo hack/demo.sh down    # removes the fleet, containers, nginx and files
#
# KILN_DEMO_DIR (default /tmp/kiln-demo) holds everything; KILN_DEMO_PORT (default 8088) the mirror port.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${KILN_DEMO_DIR:-/tmp/kiln-demo}
# A python that has ansible-core (make demo puts the project venv first on PATH).
PY=${KILN_PYTHON:-}
if [[ -z ${PY} ]]; then
    for cand in "$(command -v python3)" /work/venv-kiln/bin/python; do
        if [[ -x ${cand} ]] && "${cand}" -c 'import ansible' 2>/dev/null; then PY=${cand}; break; fi
    done
fi
[[ -n ${PY} ]] || { echo "no python with ansible-core found: set KILN_PYTHON" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "hack/demo.sh needs root (network namespaces)" >&2; exit 1; }
case "${1:-}" in
    up)
        if [[ -e ${DIR}/fleet/fleet.json ]]; then
            echo "a demo is already up in ${DIR}: run hack/demo.sh down first" >&2; exit 1
        fi
        tests/standin_sdk/dockerd.sh start >/dev/null
        exec "${PY}" hack/demo_fleet.py up "${DIR}" ;;
    down)
        exec "${PY}" hack/demo_fleet.py down "${DIR}" ;;
    *)
        sed -n '2,9p' "$0"; exit 2 ;;
esac
