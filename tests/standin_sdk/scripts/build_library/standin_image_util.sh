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

# standin_sysext_image OUT NAME ARCH ATOMS...: small EROFS image with extension-release and the atoms listed
# standin_sysext_image OUT NAME ARCH --root DIR: EROFS image of DIR's /usr (build_sysext's install root) with the
#   extension-release file (vendor build_sysext:293-303; SYSEXT_VERSION_ID from STANDIN_SYSEXT_VERSION_ID)
standin_sysext_image() {
  local out=$1 name=$2 arch=$3; shift 3
  local t atom
  t=$(mktemp -d)
  if [[ ${1:-} == --root ]]; then
    [[ -d $2/usr ]] && cp -a "$2/usr" "${t}/"
  fi
  mkdir -p "${t}/usr/lib/extension-release.d"
  {
    echo "ID=flatcar"
    echo "VERSION_ID=${FLATCAR_VERSION_ID}"
    echo "ARCHITECTURE=${arch}"
    echo "EXTENSION_RELOAD_MANAGER=1"
    echo "SYSEXT_ID=${name}"
    [[ -n ${STANDIN_SYSEXT_VERSION_ID:-} ]] && echo "SYSEXT_VERSION_ID=${STANDIN_SYSEXT_VERSION_ID}"
  } > "${t}/usr/lib/extension-release.d/extension-release.${name}"
  if [[ ${1:-} != --root ]]; then
    mkdir -p "${t}/usr/share/standin-sysext/${name}"
    for atom in "$@"; do
      echo "${atom}" >> "${t}/usr/share/standin-sysext/${name}/packages"
    done
  fi
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

# standin_partition_range DISK LABEL: "<first sector> <last sector>" of the partition with that GPT name
standin_partition_range() {
  local num info
  num=$(sgdisk -p "$1" 2>/dev/null | awk -v l="$2" '$1 ~ /^[0-9]+$/ && $NF == l {print $1; exit}')
  [[ -n ${num} ]] || return 1
  info=$(sgdisk -i "${num}" "$1")
  echo "$(sed -n 's/^First sector: \([0-9]*\).*/\1/p' <<< "${info}") $(sed -n 's/^Last sector: \([0-9]*\).*/\1/p' <<< "${info}")"
}

# standin_install_oem_sysext DISK RAW OEM VERSION: install_oem_sysext of vendor build_library/vm_image_util.sh:401-437
# on the stand-in disk's OEM partition (ext4; real: btrfs): RAW as /sysext/oem-<OEM>-<VERSION>.raw, the marker
# /sysext/active-oem-<OEM>, /oem-release from the sysext's extension-release (SYSEXT_ID without "oem-", the SYSEXT_
# prefix dropped). The partition's file system is written again with its files plus these (same label and UUID).
# Returns 3 when the OEM partition holds no ext4 (standin_fallback_disk's placeholder).
standin_install_oem_sysext() {
  local disk=$1 raw=$2 oem=$3 version=$4
  local range first last t sb uuid label
  range=$(standin_partition_range "${disk}" OEM) || return 1
  read -r first last <<< "${range}"
  t=$(mktemp -d)
  dd if="${disk}" of="${t}/oem.img" bs=512 skip="${first}" count=$((last - first + 1)) status=none
  if ! sb=$(dumpe2fs -h "${t}/oem.img" 2>/dev/null); then
    rm -rf "${t}"
    return 3   # no file system there: the placeholder disk
  fi
  uuid=$(sed -n 's/^Filesystem UUID: *//p' <<< "${sb}")
  label=$(sed -n 's/^Filesystem volume name: *//p' <<< "${sb}")
  mkdir -p "${t}/root" "${t}/ext"
  debugfs -R "rdump / ${t}/root" "${t}/oem.img" >/dev/null 2>&1 || { rm -rf "${t}"; return 1; }
  rm -rf "${t}/root/lost+found"
  install -Dpm 0644 "${raw}" "${t}/root/sysext/oem-${oem}-${version}.raw"
  touch "${t}/root/sysext/active-oem-${oem}"
  # EROFS (standin_erofs), or squashfs where mkfs.erofs is missing
  fsck.erofs --extract="${t}/ext" "${raw}" >/dev/null 2>&1 \
    || unsquashfs -q -n -f -d "${t}/ext" "${raw}" >/dev/null 2>&1 || { rm -rf "${t}"; return 1; }
  sed --quiet --regexp-extended -e "s/^SYSEXT_ID=oem-/SYSEXT_ID=/" -e "s/^SYSEXT_//p" \
    "${t}/ext/usr/lib/extension-release.d/extension-release.oem-${oem}" > "${t}/root/oem-release"
  find "${t}/root" -exec touch -h -d "@${STANDIN_EPOCH}" {} +
  mkfs.ext4 -q -F -t ext4 -L "${label:-OEM}" -U "${uuid}" -E "hash_seed=${uuid},root_owner=0:0" -N 1024 \
    -d "${t}/root" "${t}/oem.img" >/dev/null 2>&1 || { rm -rf "${t}"; return 1; }
  dd if="${t}/oem.img" of="${disk}" bs=512 seek="${first}" conv=notrunc status=none
  rm -rf "${t}"
}

# standin_extract_partition DISK LABEL OUT: copy a partition by GPT name
standin_extract_partition() {
  local disk=$1 label=$2 out=$3
  local range first last
  range=$(standin_partition_range "${disk}" "${label}") || return 1
  read -r first last <<< "${range}"
  dd if="${disk}" of="${out}" bs=512 skip="${first}" count=$((last - first + 1)) status=none
}

# OEM ids that have sysexts, per arch: like get_oem_id_list of flatcar/scripts' build_library/oem_sysexts.sh
# (the version that reads the overlay): every coreos-overlay/coreos-base/oem-<id> with an ebuild whose KEYWORDS
# name the arch. The stand-in overlay carries a few OEMs, so "everything!" means those.
standin_oem_ids() {
  local arch=$1 dir ebuild
  local -a ids=()
  for dir in "${SRC_ROOT}/third_party/coreos-overlay/coreos-base"/oem-*; do
    for ebuild in "${dir}"/*.ebuild; do
      [[ -e ${ebuild} ]] || continue
      # shellcheck disable=SC2317  # inherit() is called by the sourced ebuild
      if ( set +eu; KEYWORDS=""; inherit() { :; }; . "${ebuild}" &>/dev/null; [[ ${KEYWORDS} =~ (^|[[:space:]])${arch}($|[[:space:]]) ]] ); then
        ids+=( "${dir##*/oem-}" )
        break
      fi
    done
  done
  echo "${ids[*]}"
}
# Extra sysexts (build_library/extra_sysexts.sh names), per arch
standin_extra_sysexts() {
  local n=(overlaybd incus podman python zfs)
  if [[ $1 == amd64 ]]; then
    n+=(nvidia-drivers-535 nvidia-drivers-535-open nvidia-drivers-550 nvidia-drivers-550-open nvidia-drivers-570 nvidia-drivers-570-open)
  fi
  printf '%s\n' "${n[@]}" | LC_ALL=C sort
}
