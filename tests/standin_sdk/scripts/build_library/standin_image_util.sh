# shellcheck shell=bash
# Stand-in image helpers used by build_image (kiln test fixture).

# standin_populate_rootfs ROOT BOARD GROUP ATOM...
standin_populate_rootfs() {
  local root=$1 board=$2 group=$3; shift 3
  local atom pkgdir
  pkgdir=$(standin_path "/build/${board}/var/lib/portage/pkgs")
  mkdir -p "${root}/usr/lib" "${root}/usr/share/flatcar" "${root}/var/db/pkg" \
    "${root}/etc" "${root}/usr/lib/extension-release.d"
  for atom in "$@"; do
    standin_pkg_split "${atom}"
    local t
    t=$(mktemp -d)
    tar -C "${t}" -xf "${pkgdir}/${PKG_CAT}/${PKG_PF}.gpkg.tar"
    zstd -q -d -c "${t}/${PKG_PF}/image.tar.zst" | tar -C "${root}" -xf -
    mkdir -p "${root}/var/db/pkg/${PKG_CAT}/${PKG_PF}"
    zstd -q -d -c "${t}/${PKG_PF}/metadata.tar.zst" | tar -C "${root}/var/db/pkg/${PKG_CAT}/${PKG_PF}" -xf -
    rm -rf "${t}"
  done
  cat > "${root}/usr/lib/os-release" <<OSR
NAME="Flatcar Container Linux by Kinvolk"
ID=flatcar
ID_LIKE=coreos
VERSION=${FLATCAR_VERSION}
VERSION_ID=${FLATCAR_VERSION_ID}
BUILD_ID=${FLATCAR_BUILD_ID}
SYSEXT_LEVEL=1.0
PRETTY_NAME="Flatcar Container Linux by Kinvolk ${FLATCAR_VERSION} (Oklo)"
ANSI_COLOR="38;5;75"
HOME_URL="https://flatcar.org/"
BUG_REPORT_URL="https://issues.flatcar.org"
FLATCAR_BOARD="${board}"
CPE_NAME="cpe:2.3:o:flatcar-linux:flatcar_linux:${FLATCAR_VERSION}:*:*:*:*:*:*:*"
OSR
  cat > "${root}/usr/share/flatcar/lsb-release" <<LSB
DISTRIB_ID="Flatcar Container Linux by Kinvolk"
DISTRIB_RELEASE=${FLATCAR_VERSION}
DISTRIB_CODENAME="Oklo"
DISTRIB_DESCRIPTION="Flatcar Container Linux by Kinvolk ${FLATCAR_VERSION} (Oklo)"
LSB
  cat > "${root}/usr/share/flatcar/update.conf" <<UPD
SERVER=https://public.update.flatcar-linux.net/v1/update/
GROUP=${group}
UPD
  ln -sfn ../usr/lib/os-release "${root}/etc/os-release"
  standin_touch_tree "${root}"
}

# standin_contents ROOT: deterministic file listing like *_contents.txt
standin_contents() {
  (cd "$1" && find . -mindepth 1 -printf '%M %s %p\n' | LC_ALL=C sort -k3)
}

# standin_sysext_image OUT NAME ARCH ATOMS...: small EROFS image with extension-release
standin_sysext_image() {
  local out=$1 name=$2 arch=$3; shift 3
  local t atom
  t=$(mktemp -d)
  mkdir -p "${t}/usr/lib/extension-release.d" "${t}/usr/share/standin-sysext/${name}"
  cat > "${t}/usr/lib/extension-release.d/extension-release.${name}" <<EXT
ID=flatcar
VERSION_ID=${FLATCAR_VERSION_ID}
ARCHITECTURE=${arch}
EXTENSION_RELOAD_MANAGER=1
SYSEXT_ID=${name}
EXT
  for atom in "$@"; do
    echo "${atom}" >> "${t}/usr/share/standin-sysext/${name}/packages"
  done
  standin_erofs "${t}" "${out}"
  rm -rf "${t}"
}

# standin_fallback_disk OUT USR_IMAGE: deterministic (non-bootable) GPT disk
# with the Flatcar partition labels; USR-A holds USR_IMAGE.
standin_fallback_disk() {
  local out=$1 usr=$2
  local g=00000000-0000-4000-8000-0000000000
  rm -f "${out}"
  truncate -s 24M "${out}"
  sgdisk -U "${g}00" \
    -n 1:2048:+4M   -t 1:ef00 -c 1:EFI-SYSTEM       -u "1:${g}01" \
    -n 2:0:+1M      -t 2:ef02 -c 2:BIOS-BOOT        -u "2:${g}02" \
    -n 3:0:+6M      -t 3:5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6 -c 3:USR-A -u "3:7130c94a-213a-4e5a-8e26-6cce9662f132" \
    -n 4:0:+6M      -t 4:5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6 -c 4:USR-B -u "4:e03dd35c-7c2d-4a47-b3fe-27f15780a57c" \
    -n 6:0:+2M      -t 6:8300 -c 6:OEM              -u "6:${g}06" \
    -n 7:0:+1M      -t 7:c95dc21a-df0e-4340-8d7b-26cbfa9a03e0 -c 7:OEM-CONFIG -u "7:${g}07" \
    -n 9:0:0        -t 9:3884dd41-8582-4404-b9a8-e9b84f2df50e -c 9:ROOT -u "9:${g}09" \
    "${out}" >/dev/null
  local start
  start=$(sgdisk -i 3 "${out}" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
  dd if="${usr}" of="${out}" bs=512 seek="${start}" conv=notrunc status=none
}

# standin_extract_partition DISK LABEL OUT: copy a partition by GPT name
standin_extract_partition() {
  local disk=$1 label=$2 out=$3
  local num first last
  num=$(sgdisk -p "${disk}" 2>/dev/null | awk -v l="${label}" '$1 ~ /^[0-9]+$/ && $NF == l {print $1; exit}')
  [[ -n ${num} ]] || return 1
  first=$(sgdisk -i "${num}" "${disk}" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
  last=$(sgdisk -i "${num}" "${disk}" | sed -n 's/^Last sector: \([0-9]*\).*/\1/p')
  dd if="${disk}" of="${out}" bs=512 skip="${first}" count=$((last - first + 1)) status=none
}

# OEM ids that have sysexts, per arch (coreos-base/oem-* KEYWORDS)
standin_oem_ids() {
  case "$1" in
    amd64) echo akamai ami azure cloudsigma cloudstack digitalocean exoscale gce hetzner hyperv kubevirt nutanix openstack oraclecloud proxmoxve qemu scaleway stackit vagrant virtualbox vmware ;;
    arm64) echo akamai ami azure hetzner kubevirt openstack oraclecloud proxmoxve qemu scaleway stackit ;;
  esac
}
# Extra sysexts (build_library/extra_sysexts.sh names), per arch
standin_extra_sysexts() {
  local n=(overlaybd incus podman python zfs)
  if [[ $1 == amd64 ]]; then
    n+=(nvidia-drivers-535 nvidia-drivers-535-open nvidia-drivers-550 nvidia-drivers-550-open nvidia-drivers-570 nvidia-drivers-570-open)
  fi
  printf '%s\n' "${n[@]}" | LC_ALL=C sort
}
