#!/usr/bin/env bash
# Build the stand-in Flatcar SDK container image locally (no registry is
# reachable on the test machines).
#
#   build-sdk-image.sh [--save DIR] [--force] <flavour> <sdk_version>
#
#   <flavour>      all | amd64 | arm64
#   <sdk_version>  e.g. 4593.2.5 or 4799.0.0+nightly-20260821-2100
#
# Result: image kiln-standin.invalid/flatcar-sdk-<flavour>:<docker_vernum>
# (<docker_vernum> = <sdk_version> with '+' replaced by '-').  Never the real
# SDK's name ghcr.io/flatcar/...: a real run_sdk_container on this machine
# would take a local stand-in for the SDK.  '.invalid' (RFC 2606) can never be
# pulled; kiln reaches it through sdk_registry (run_sdk_container -C).  Old
# ghcr.io/flatcar/flatcar-sdk-* tags carrying this script's label are removed.
#
# A debootstrap'ed bookworm rootfs is cached as a tarball under
# ${KILN_TEST_CACHE:-/var/cache/kiln-test}; reruns only re-import it (or do
# nothing when the tagged image already carries the same content hash).
#
# sudo in the image filters the environment like the real SDK's sudoers: the
# real flatcar/scripts sdk_lib/90_env_keep is copied to /etc/sudoers.d/ at
# image build time (the real SDK installs it there too).  It is read from
# ${KILN_VENDOR_DIR:-<repo>/../shared/vendor}[/flatcar-scripts]; the build
# fails without it.
#
# --save DIR writes, like ci-automation's docker_image_to_buildcache:
#   DIR/containers/<docker_vernum>/flatcar-sdk-<flavour>-<docker_vernum>.tar.zst
#   DIR/containers/<docker_vernum>/flatcar-sdk-<flavour>-<docker_vernum>.id
# (.id = image ID without the "sha256:" prefix).
set -euo pipefail

REGISTRY="kiln-standin.invalid"
UPSTREAM_REGISTRY="ghcr.io/flatcar"
LABEL="org.kiln.standin-sdk.hash"
CACHE=${KILN_TEST_CACHE:-/var/cache/kiln-test}
MIRROR=${KILN_TEST_DEBIAN_MIRROR:-}
SUITE=bookworm
# Bump when the rootfs customisation below changes.
RECIPE_VERSION=5
# Bump when the overlay added at import time changes.
OVERLAY_VERSION=2
INCLUDE=(
    bash git ca-certificates sudo curl
    gdisk fdisk mtools dosfstools e2fsprogs util-linux
    squashfs-tools erofs-utils qemu-utils
    bzip2 lbzip2 pigz gzip zstd xz-utils cpio tar zip unzip
    python3-minimal
    ovmf qemu-efi-aarch64
)

save_dir=""
force=0
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --save) save_dir=$2; shift 2 ;;
        --save=*) save_dir=${1#--save=}; shift ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        --) shift; args+=("$@"); break ;;
        -*) echo "Unknown flag '$1'" >&2; exit 1 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [[ ${#args[@]} -ne 2 ]]; then
    echo "usage: $0 [--save DIR] [--force] <all|amd64|arm64> <sdk_version>" >&2
    exit 1
fi
flavour=${args[0]}
sdk_version=${args[1]}
case "${flavour}" in all|amd64|arm64) ;; *) echo "invalid flavour '${flavour}'" >&2; exit 1 ;; esac
docker_vernum=${sdk_version//+/-}
image="${REGISTRY}/flatcar-sdk-${flavour}:${docker_vernum}"

log() { echo "build-sdk-image: $*" >&2; }

# Stand-in images that earlier versions of this script tagged with the real SDK's name: untag them
# (only those with our label; a real SDK image pulled from ghcr.io is left alone).
while read -r old; do
    [[ -n ${old} ]] || continue
    label=$(docker image inspect "${old}" --format "{{index .Config.Labels \"${LABEL}\"}}" 2>/dev/null || true)
    if [[ -n ${label} && ${label} != "<no value>" ]]; then
        log "removing stand-in tag ${old}"
        docker rmi "${old}" >/dev/null
    fi
done < <(docker image ls --format '{{.Repository}}:{{.Tag}}' "${UPSTREAM_REGISTRY}/flatcar-sdk-*" 2>/dev/null || true)

vendor=${KILN_VENDOR_DIR:-$(dirname "$(readlink -f "$0")")/../../../../shared/vendor}
env_keep=""
for cand in "${vendor}/flatcar-scripts/sdk_lib/90_env_keep" "${vendor}/sdk_lib/90_env_keep"; do
    if [[ -f ${cand} ]]; then env_keep=${cand}; break; fi
done
if [[ -z ${env_keep} ]]; then
    echo "needs ../shared/vendor (flatcar/scripts); point KILN_VENDOR_DIR at a checkout: make test KILN_VENDOR_DIR=/path" >&2
    exit 1
fi

recipe_hash=$(printf '%s\n' "${RECIPE_VERSION}" "${SUITE}" "${INCLUDE[@]}" | sha256sum | cut -c1-16)
base_tar="${CACHE}/standin-sdk-rootfs-${SUITE}-${recipe_hash}.tar"
mkdir -p "${CACHE}"

build_rootfs() {
    local work rootfs
    work=$(mktemp -d "${CACHE}/.rootfs.XXXXXX")
    rootfs="${work}/rootfs"
    trap 'rm -rf "${work}"' RETURN
    log "debootstrap ${SUITE} (minbase) into ${rootfs}"
    local inc
    inc=$(IFS=,; echo "${INCLUDE[*]}")
    debootstrap --variant=minbase --include="${inc}" "${SUITE}" "${rootfs}" ${MIRROR:+"${MIRROR}"} \
        > "${work}/debootstrap.log" 2>&1 || { tail -n 30 "${work}/debootstrap.log" >&2; return 1; }

    # SDK-like layout: sdk user, ~/trunk -> /mnt/host/source, /build,
    # firmware as qcow2 where the real SDK keeps it (/usr/share/edk2/...).
    chroot "${rootfs}" /usr/sbin/groupadd -g 1000 sdk
    chroot "${rootfs}" /usr/sbin/useradd -u 1000 -g 1000 -m -s /bin/bash sdk
    ln -sfn /mnt/host/source "${rootfs}/home/sdk/trunk"
    mkdir -p "${rootfs}/build" "${rootfs}/mnt/host/source"
    mkdir -p "${rootfs}/usr/share/edk2/OvmfX64" "${rootfs}/usr/share/edk2/ArmVirtQemu-AARCH64"
    local q="${rootfs}/usr/share/edk2"
    qemu-img convert -f raw -O qcow2 "${rootfs}/usr/share/OVMF/OVMF_CODE_4M.fd" "${q}/OvmfX64/OVMF_CODE_4M.qcow2"
    qemu-img convert -f raw -O qcow2 "${rootfs}/usr/share/OVMF/OVMF_VARS_4M.fd" "${q}/OvmfX64/OVMF_VARS_4M.qcow2"
    qemu-img convert -f raw -O qcow2 "${rootfs}/usr/share/OVMF/OVMF_CODE_4M.secboot.fd" "${q}/OvmfX64/OVMF_CODE_4M.secboot.qcow2"
    qemu-img convert -f raw -O qcow2 "${rootfs}/usr/share/OVMF/OVMF_VARS_4M.ms.fd" "${q}/OvmfX64/OVMF_VARS_4M.secboot.qcow2"
    qemu-img convert -f raw -O qcow2 "${rootfs}/usr/share/AAVMF/AAVMF_CODE.fd" "${q}/ArmVirtQemu-AARCH64/QEMU_EFI.qcow2"
    qemu-img convert -f raw -O qcow2 "${rootfs}/usr/share/AAVMF/AAVMF_VARS.fd" "${q}/ArmVirtQemu-AARCH64/QEMU_VARS.qcow2"
    echo "kiln stand-in Flatcar SDK (debootstrap ${SUITE}, recipe ${RECIPE_VERSION})" > "${rootfs}/etc/standin-sdk"
    # Trim caches to keep the image small.
    rm -rf "${rootfs}/var/cache/apt/archives/"*.deb "${rootfs}/var/lib/apt/lists/"* \
        "${rootfs}/usr/share/doc" "${rootfs}/usr/share/man" "${rootfs}/usr/share/locale"
    log "packing rootfs to ${base_tar}"
    tar --numeric-owner --xattrs -C "${rootfs}" -cf "${base_tar}.tmp" .
    mv "${base_tar}.tmp" "${base_tar}"
}

if [[ ! -s ${base_tar} || ${force} -eq 1 ]]; then
    exec 9>"${base_tar}.lock"
    flock 9
    if [[ ! -s ${base_tar} || ${force} -eq 1 ]]; then
        build_rootfs
    fi
    flock -u 9
fi

env_keep_hash=$(sha256sum < "${env_keep}" | cut -c1-16)
content_hash=$(printf '%s\n' "${recipe_hash}" "${flavour}" "${sdk_version}" "${env_keep_hash}" "${OVERLAY_VERSION}" | sha256sum | cut -c1-16)
current=$(docker image inspect "${image}" --format "{{index .Config.Labels \"${LABEL}\"}}" 2>/dev/null || true)
if [[ ${current} == "${content_hash}" && ${force} -eq 0 ]]; then
    log "${image} is up to date"
else
    work=$(mktemp -d "${CACHE}/.import.XXXXXX")
    trap 'rm -rf "${work}"' EXIT
    mkdir -p "${work}/overlay/etc"
    cat > "${work}/overlay/etc/lsb-release" <<LSB
DISTRIB_ID="Flatcar Container Linux by Kinvolk"
DISTRIB_RELEASE=${sdk_version}
DISTRIB_CODENAME="Oklo"
DISTRIB_DESCRIPTION="Flatcar Container Linux by Kinvolk ${sdk_version} (stand-in SDK, flavour ${flavour})"
LSB
    echo "${flavour}" > "${work}/overlay/etc/standin-sdk-flavour"
    # The real SDK marks itself with /etc/debian_chroot (common.sh derives INSIDE_CHROOT from it, so
    # it survives sudo's env_reset).
    echo "flatcar-sdk" > "${work}/overlay/etc/debian_chroot"
    mkdir -p "${work}/overlay/etc/sudoers.d"
    install -m 0440 "${env_keep}" "${work}/overlay/etc/sudoers.d/90_env_keep"
    cp "${base_tar}" "${work}/rootfs.tar"
    tar --numeric-owner --owner=0 --group=0 -C "${work}/overlay" -rf "${work}/rootfs.tar" ./etc/lsb-release ./etc/standin-sdk-flavour \
        ./etc/debian_chroot ./etc/sudoers.d/90_env_keep
    log "importing ${image}"
    docker import \
        --change "LABEL ${LABEL}=${content_hash}" \
        --change "LABEL org.kiln.standin-sdk.flavour=${flavour}" \
        --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "CMD [\"/bin/bash\"]" \
        "${work}/rootfs.tar" "${image}" >/dev/null
    rm -rf "${work}"
    trap - EXIT
fi

if [[ -n ${save_dir} ]]; then
    out="${save_dir}/containers/${docker_vernum}"
    mkdir -p "${out}"
    name="flatcar-sdk-${flavour}-${docker_vernum}"
    id=$(docker image inspect "${image}" --format '{{.Id}}')
    id=${id#sha256:}
    if [[ -s ${out}/${name}.tar.zst && -s ${out}/${name}.id && $(<"${out}/${name}.id") == "${id}" ]]; then
        log "${out}/${name}.tar.zst is up to date"
    else
        log "saving ${image} to ${out}/${name}.tar.zst"
        docker save "${image}" | zstd -q -T0 -f -o "${out}/${name}.tar.zst"
        chmod 0644 "${out}/${name}.tar.zst"
        echo "${id}" > "${out}/${name}.id"
    fi
fi
echo "${image}"
