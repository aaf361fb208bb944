#!/usr/bin/env bash
# Build the base image of kiln's execution environment (execution-environment.yml) without pulling from a
# container registry: debootstrap a Debian trixie (python3.13) rootfs from the Debian archive and
# `docker import` it.
#
#   hack/build-ee-base.sh [--force] [image]      # image: default kiln-ee-base:local
#
# The image carries everything ansible-builder v3's generated Containerfile runs in its base stage, so
# `make ee` needs the network only for PyPI:
#   * /usr/bin/python3 (python_path in execution-environment.yml) with pip and venv; pip may install over
#     the system packages (PIP_BREAK_SYSTEM_PACKAGES=1: trixie's Python is "externally managed");
#   * the programs of bindep.txt (openssh-client, rsync, gnupg, git) and ca-certificates;
#   * /usr/local/bin/kiln-ee-pkgmgr, the package_manager_path of execution-environment.yml: the dnf verbs
#     ansible-builder uses (`install -y PKG...`, `clean all`) mapped to apt-get; packages already installed
#     are not fetched again, so bindep's system packages cost nothing.
#
# Site CAs: the certificates in KILN_EE_EXTRA_CA_DIR (default /usr/local/share/ca-certificates, where
# Debian keeps a host's locally added CAs, e.g. a TLS-intercepting egress proxy's) are added to the image's
# trust store, so pip in `make ee` reaches PyPI through the same proxy as the host.  KILN_EE_EXTRA_CA_DIR=
# (empty) leaves them out (an image to push to a shared registry).
#
# Cached: the image is labelled with a digest of this script, the suite, the mirror and the site CAs
# (org.kiln.ee-base.digest) and rebuilt only when one of them changes (or with --force).  Environment:
# KILN_EE_DEBIAN_MIRROR (default http://deb.debian.org/debian), KILN_EE_SUITE (default trixie), TMPDIR for
# the rootfs (about 450 MB while building; the image is about 240 MB).
set -euo pipefail

force=0
image=kiln-ee-base:local
while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) force=1; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        --) shift; [[ $# -gt 0 ]] && image=$1; break ;;
        -*) echo "build-ee-base: unknown flag '$1'" >&2; exit 1 ;;
        *) image=$1; shift ;;
    esac
done

SUITE=${KILN_EE_SUITE:-trixie}
MIRROR=${KILN_EE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_DIR=${KILN_EE_EXTRA_CA_DIR-/usr/local/share/ca-certificates}
INCLUDE=(
    python3 python3-pip python3-venv
    openssh-client rsync git gnupg ca-certificates
    bash tar gzip xz-utils
)

log() { echo "build-ee-base: $*" >&2; }

self=$(readlink -f "$0")
site_cas=()
if [[ -n ${CA_DIR} && -d ${CA_DIR} ]]; then
    mapfile -t site_cas < <(find "${CA_DIR}" -maxdepth 1 -type f -name '*.crt' | sort)
fi
digest=$( { sha256sum < "${self}"; printf '%s\n' "${SUITE}" "${MIRROR}";
            [[ ${#site_cas[@]} -eq 0 ]] || cat -- "${site_cas[@]}"; } | sha256sum | cut -c1-16)
current=$(docker image inspect "${image}" --format '{{index .Config.Labels "org.kiln.ee-base.digest"}}' 2>/dev/null || true)
if [[ ${current} == "${digest}" && ${force} -eq 0 ]]; then
    log "${image} is up to date (${digest})"
    echo "${image}"
    exit 0
fi

for prog in debootstrap docker; do
    command -v "${prog}" >/dev/null || { echo "build-ee-base: needs ${prog} (hack/install-apt-deps.sh)" >&2; exit 1; }
done
if ! curl -fsI --max-time 20 "${MIRROR}/dists/${SUITE}/Release" >/dev/null; then
    echo "build-ee-base: ${MIRROR}/dists/${SUITE}/Release is not reachable (set KILN_EE_DEBIAN_MIRROR)" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-ee-base.XXXXXX")
trap 'rm -rf "${work}"' EXIT
rootfs="${work}/rootfs"
log "debootstrap ${SUITE} (minbase) from ${MIRROR} into ${rootfs}"
inc=$(IFS=,; echo "${INCLUDE[*]}")
# TMPDIR stays outside: debootstrap's second stage runs maintainer scripts in the chroot (ca-certificates' mktemp),
# where the caller's TMPDIR (a test worker's /tmp/kx1-...) does not exist
env -u TMPDIR debootstrap --variant=minbase --include="${inc}" "${SUITE}" "${rootfs}" "${MIRROR}" \
    > "${work}/debootstrap.log" 2>&1 || { tail -n 30 "${work}/debootstrap.log" >&2; exit 1; }

# apt inside the image (bindep packages not in the base) uses the same mirror.
echo "deb ${MIRROR} ${SUITE} main" > "${rootfs}/etc/apt/sources.list"
rm -f "${rootfs}/etc/apt/sources.list.d/"*
cat > "${rootfs}/usr/local/bin/kiln-ee-pkgmgr" <<'PKGMGR'
#!/bin/sh
# kiln EE base: the dnf verbs ansible-builder v3 runs (install -y PKG..., clean all) on apt-get.
set -eu
verb=${1:-}
[ $# -gt 0 ] && shift
case "${verb}" in
    install)
        missing=""
        for arg in "$@"; do
            case "${arg}" in
                -*) ;;
                *) dpkg-query -W -f='${db:Status-Status}' -- "${arg}" 2>/dev/null | grep -qx installed \
                       || missing="${missing} ${arg}" ;;
            esac
        done
        [ -z "${missing}" ] && exit 0
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        # shellcheck disable=SC2086 # a list of package names
        apt-get install -y -q --no-install-recommends -- ${missing}
        ;;
    clean)
        apt-get clean
        rm -rf /var/lib/apt/lists/*
        ;;
    *) echo "kiln-ee-pkgmgr: unsupported: ${verb} $*" >&2; exit 1 ;;
esac
PKGMGR
chmod 0755 "${rootfs}/usr/local/bin/kiln-ee-pkgmgr"
if [[ ${#site_cas[@]} -gt 0 ]]; then
    log "adding site CAs: ${site_cas[*]}"
    install -m 0644 -t "${rootfs}/usr/local/share/ca-certificates/" -- "${site_cas[@]}"
    env -u TMPDIR chroot "${rootfs}" /usr/sbin/update-ca-certificates >/dev/null
fi
echo "kiln execution environment base (debootstrap ${SUITE}, ${digest})" > "${rootfs}/etc/kiln-ee-base"
rm -rf "${rootfs}/var/cache/apt/archives/"*.deb "${rootfs}/var/lib/apt/lists/"* \
    "${rootfs}/usr/share/doc" "${rootfs}/usr/share/man" "${rootfs}/usr/share/locale"

log "importing ${image}"
tar --numeric-owner --xattrs -C "${rootfs}" -c . | docker import \
    --change "LABEL org.kiln.ee-base.digest=${digest}" \
    --change "LABEL org.kiln.ee-base.suite=${SUITE}" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV PIP_BREAK_SYSTEM_PACKAGES=1" \
    --change "ENV LANG=C.UTF-8" \
    --change "CMD [\"/bin/bash\"]" \
    - "${image}" >/dev/null
echo "${image}"
