#!/usr/bin/env bash
# kiln demo: the whole pipeline (build -> boot check -> sign -> update payload -> publish -> keys -> Nebraska)
# on a throwaway local fleet of network namespaces, against the STAND-IN SDK (a test fixture imitating the
# Flatcar SDK's CLI; the real SDK is a 6 GB container and hours of compiling), with the spec-checked Nebraska
# stub (tests/integration/nebraska_stub.py) in the fleet's controller namespace. The run is named after the
# version (release-<version>). Ends with the mirror (images, flatcar_production_update.gz, public keys) served
# on 127.0.0.1, the Nebraska packages and the run summary.
#
#   sudo hack/demo.sh up      # a few minutes; needs root, docker (started if needed) and the venv
#   sudo hack/demo.sh down    # removes everything up made: fleet, containers, nginx, files, and the stand-in
#                             # image, test cache and dockerd when the demo was the one to create/start them
#
# KILN_DEMO_DIR (default /tmp/kiln-demo) holds everything; KILN_DEMO_PORT (default 8088) the mirror port.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${KILN_DEMO_DIR:-/tmp/kiln-demo}
# A python that has ansible-core: KILN_PYTHON, else the repo's venv (make deps), else python3 on PATH.
PY=${KILN_PYTHON:-}
if [[ -z ${PY} ]]; then
    for cand in "${PWD}/.venv/bin/python" "$(command -v python3 || true)"; do
        if [[ -x ${cand} ]] && "${cand}" -c 'import ansible' 2>/dev/null; then PY=${cand}; break; fi
    done
fi
[[ -n ${PY} ]] || { echo "no python with ansible-core found in ${PWD}/.venv or on PATH: run make deps, or set KILN_PYTHON" >&2; exit 1; }
# ansible-playbook and friends from the same venv
PATH="$(dirname "${PY}"):${PATH}"
export PATH
[[ $(id -u) -eq 0 ]] || { echo "hack/demo.sh needs root (network namespaces)" >&2; exit 1; }
case "${1:-}" in
    up)
        if [[ -e ${DIR}/fleet/fleet.json ]]; then
            echo "a demo is already up in ${DIR}: run hack/demo.sh down first" >&2; exit 1
        fi
        # dockerd is started (and recorded for down) by demo_fleet.py
        exec "${PY}" hack/demo_fleet.py up "${DIR}" ;;
    down)
        exec "${PY}" hack/demo_fleet.py down "${DIR}" ;;
    *)
        sed -n '2,13p' "$0"; exit 2 ;;
esac
