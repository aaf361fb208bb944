#!/usr/bin/env bash
# shellcheck disable=SC2034  # FLAGS_*, VM_README, FLATCAR_VERSION_STRING: set as the real image_to_vm.sh / vm_image_util.sh set them
# Stand-in for flatcar/scripts image_to_vm.sh (kiln test fixture).
# Converts build_image output into flatcar_production_<format>_image.<ext>
# plus launchers/firmware for qemu_uefi.

SCRIPT_ROOT=$(dirname "$(readlink -f "$0")")
. "${SCRIPT_ROOT}/common.sh" || exit 1

assert_inside_chroot

. "${BUILD_LIBRARY_DIR}/standin_vm_types.sh" || exit 1

DEFINE_string board "${DEFAULT_BOARD}" \
  "Board for which the image was built"
DEFINE_string format "" \
  "Output format, one of: ${VALID_IMG_TYPES[*]}"
DEFINE_string from "" \
  "Directory containing flatcar_production_image.bin."
DEFINE_string disk_layout "" \
  "The disk layout type to use for this image."
# vendor image_to_vm.sh:37 - DEFAULT_MEM is set nowhere, so the real default is empty
# and the format's memory (IMG_DEFAULT_MEM=2048, vm_image_util.sh:87) applies.
DEFINE_integer mem "${DEFAULT_MEM:-}" \
  "Memory size for the vm config in MBs."
DEFINE_string to "" \
  "Destination folder for VM output file(s)"
DEFINE_boolean getbinpkg "${FLAGS_FALSE}" \
  "Download binary packages from remote repository."
DEFINE_string getbinpkgver "" \
  "Use binary packages from a specific version."

. "${BUILD_LIBRARY_DIR}/release_util.sh" || exit 1

# Like the real script: default to keeping uncompressed files so the
# generated launchers find their images.
FLAGS_only_store_compressed=${FLAGS_FALSE}

FLAGS "$@" || exit 1
eval set -- "${FLAGS_ARGV}"
switch_to_strict_mode

standin_step_begin image_to_vm

if [[ -z "${FLAGS_format}" ]]; then
  FLAGS_format=qemu_uefi
fi
VM_IMG_TYPE=""
for t in "${VALID_IMG_TYPES[@]}"; do
  [[ ${t} == "${FLAGS_format}" ]] && VM_IMG_TYPE=${t}
done
if [[ -z ${VM_IMG_TYPE} ]]; then
  die_notrace "Invalid format: ${FLAGS_format}"
fi
if [ -z "${FLAGS_board}" ] ; then
  die_notrace "--board is required."
fi

if [[ ${FLAGS_getbinpkg} -eq ${FLAGS_TRUE} ]]; then
  "${SCRIPTS_DIR}/setup_board" --board="${FLAGS_board}" \
      --getbinpkgver="${FLAGS_getbinpkgver}" --regen_configs_only
fi

. "${BUILD_LIBRARY_DIR}/board_options.sh" || exit 1

IMAGES_DIR="${DEFAULT_BUILD_ROOT}/images/${FLAGS_board}"
if [ -z "${FLAGS_from}" ] ; then
  FLAGS_from="${IMAGES_DIR}/latest"
else
  FLAGS_from=$(standin_path "${FLAGS_from}")
fi
if [ -z "${FLAGS_to}" ] ; then
  FLAGS_to="${FLAGS_from}"
else
  FLAGS_to=$(standin_path "${FLAGS_to}")
fi
FLAGS_from=$(readlink -f "${FLAGS_from}")
FLAGS_to=$(readlink -f "${FLAGS_to}")
mkdir -p "${FLAGS_to}"

if [ -f "${FLAGS_from}/version.txt" ]; then
  source "${FLAGS_from}/version.txt"
  FLATCAR_VERSION_STRING="${FLATCAR_VERSION}"
fi

VM_SRC_IMG="${FLAGS_from}/${FLATCAR_PRODUCTION_IMAGE_NAME}"
if [[ ! -f "${VM_SRC_IMG}" ]]; then
  die "Source image does not exist: ${VM_SRC_IMG}"
fi
VM_SRC_SYSEXT_IMG="${FLAGS_from}/${FLATCAR_PRODUCTION_IMAGE_SYSEXT_BASE}"
if [[ ! -f "${VM_SRC_SYSEXT_IMG}" ]]; then
  die "Sysext base image does not exist: ${VM_SRC_SYSEXT_IMG}"
fi

src_base=${FLATCAR_PRODUCTION_IMAGE_NAME%_image.bin}
dst_name() { echo "${src_base}_${1:-${VM_IMG_TYPE}}${2}"; }
VM_DST_IMG="${FLAGS_to}/$(dst_name "" "_image.$(standin_disk_ext "${VM_IMG_TYPE}")")"
VM_TMP_DIR="${VM_DST_IMG}.vmtmpdir"
VM_TMP_IMG="${VM_TMP_DIR}/disk_image.bin"
VM_NAME="$(dst_name "" "")-${FLATCAR_VERSION}"
VM_NAME="${VM_NAME//./-}"; VM_NAME="${VM_NAME//+/-}"
VM_README="${FLAGS_to}/$(dst_name "" ".README")"
VM_GENERATED_FILES=()

standin_maybe_fail image_to_vm "${VM_DST_IMG}"

trap 'rm -rf "${VM_TMP_DIR}"' EXIT
rm -rf "${VM_TMP_DIR}"
mkdir -p "${VM_TMP_DIR}"
info "Initializing new disk image..."
cp --sparse=always "${VM_SRC_IMG}" "${VM_TMP_IMG}"

oem=${STANDIN_OEM_SYSEXT[${VM_IMG_TYPE}]:-}
if [[ -n ${oem} ]]; then
  prebuilt="${FLAGS_from}/oem-${oem}.raw"
  if [[ ! -f "${prebuilt}" ]]; then
    die "Prebuilt OEM sysext not found at ${prebuilt}. Run 'build_image oem_sysext' first."
  fi
  info "Installing oem-${oem} sysext from prebuilt image"
  . "${BUILD_LIBRARY_DIR}/standin_image_util.sh"
  # into the OEM partition's file system, like install_oem_sysext
  rc=0
  standin_install_oem_sysext "${VM_TMP_IMG}" "${prebuilt}" "${oem}" "${FLATCAR_VERSION}" || rc=$?
  if [[ ${rc} -ne 0 && ${rc} -ne 3 ]]; then
    die "Could not install oem-${oem} sysext"
  fi
  # The placeholder disk (rc 3): the OEM sysext is appended to the OEM partition area when it fits.
  if [[ ${rc} -eq 3 ]] && range=$(standin_partition_range "${VM_TMP_IMG}" OEM); then
    read -r first last <<< "${range}"
    size=$(stat -c %s "${prebuilt}")
    if (( size <= (last - first + 1) * 512 )) && [[ ! -x ${BUILD_LIBRARY_DIR}/standin_disk/mkdisk.sh ]]; then
      dd if="${prebuilt}" of="${VM_TMP_IMG}" bs=512 seek="${first}" conv=notrunc status=none
    fi
  fi
fi

disk_format=${STANDIN_DISK_FORMAT[${VM_IMG_TYPE}]:-raw}
info "Writing ${disk_format} image $(basename "${VM_DST_IMG}")"
case "${disk_format}" in
  raw) mv "${VM_TMP_IMG}" "${VM_DST_IMG}" ;;
  qcow2|exoscale) rm -f "${VM_DST_IMG}"; qemu-img convert -f raw "${VM_TMP_IMG}" -O qcow2 -c -o compat=0.10 "${VM_DST_IMG}" ;;
  cpio)
    # PXE: the initramfs-style cpio of the USR image plus the kernel
    t="${VM_TMP_DIR}/pxe"; mkdir -p "${t}/usr"
    cp "${VM_SRC_SYSEXT_IMG}" "${t}/usr.squashfs"
    standin_touch_tree "${t}"
    (cd "${t}" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible) | gzip -n -9 > "${VM_DST_IMG}"
    cp "${FLAGS_from}/flatcar_production_image.vmlinuz" "${FLAGS_to}/$(dst_name "" ".vmlinuz")" 2>/dev/null || true
    VM_GENERATED_FILES+=( "${FLAGS_to}/$(dst_name "" ".vmlinuz")" )
    ;;
  *)
    # vmdk/vhd/vhdx/hdd/iso: the stand-in stores the raw disk under the real
    # name (qemu-img's writers for these embed random IDs/timestamps).
    mv "${VM_TMP_IMG}" "${VM_DST_IMG}" ;;
esac
if [[ ${VM_IMG_TYPE} == qemu_uefi ]]; then
  target=$(basename "${VM_DST_IMG}")
  if [[ ${BOARD} == amd64-usr ]]; then
    ln -fs "${target}" "${VM_DST_IMG/qemu_uefi/qemu}"
    VM_GENERATED_FILES+=( "${VM_DST_IMG/qemu_uefi/qemu}" )
  fi
  ln -fs "${target}" "${VM_DST_IMG/qemu_uefi/qemu_uefi_secure}"
  VM_GENERATED_FILES+=( "${VM_DST_IMG/qemu_uefi/qemu_uefi_secure}" )
fi
if [[ -z ${STANDIN_BUNDLE_FORMAT[${VM_IMG_TYPE}]:-} ]]; then
  VM_GENERATED_FILES+=( "${VM_DST_IMG}" )
fi

# firmware: the real SDK ships qcow2 copies under /usr/share/edk2; the stand-in
# SDK image has them too, the host fallback converts the Debian .fd files.
firmware() {
  local want=$1 out=$2 fd
  case "${want}" in
    OvmfX64/OVMF_CODE_4M.qcow2) fd=/usr/share/OVMF/OVMF_CODE_4M.fd ;;
    OvmfX64/OVMF_VARS_4M.qcow2) fd=/usr/share/OVMF/OVMF_VARS_4M.fd ;;
    OvmfX64/OVMF_CODE_4M.secboot.qcow2) fd=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd ;;
    OvmfX64/OVMF_VARS_4M.secboot.qcow2) fd=/usr/share/OVMF/OVMF_VARS_4M.ms.fd ;;
    ArmVirtQemu-AARCH64/QEMU_EFI*.qcow2) fd=/usr/share/AAVMF/AAVMF_CODE.fd ;;
    ArmVirtQemu-AARCH64/QEMU_VARS*.qcow2) fd=/usr/share/AAVMF/AAVMF_VARS.fd ;;
  esac
  rm -f "${out}"
  if [[ -f /usr/share/edk2/${want} ]]; then
    cp "/usr/share/edk2/${want}" "${out}"
  elif [[ -n ${fd} && -f ${fd} ]]; then
    qemu-img convert -f raw -O qcow2 "${fd}" "${out}"
  else
    die "UEFI firmware not found: /usr/share/edk2/${want} (install ovmf / qemu-efi-aarch64)"
  fi
}

write_launcher() {
  local type=$1 image=$2 ro=${3:-} rw=${4:-} secure=${5:-0}
  local script
  script="${FLAGS_to}/$(dst_name "${type}" ".sh")"
  local name="${VM_NAME/qemu_uefi/${type}}"
  sed -e "s%^VM_NAME=.*%VM_NAME='${name}'%" \
      -e "s%^VM_MEMORY=.*%VM_MEMORY='${FLAGS_mem:-2048}'%" \
      -e "s%^VM_BOARD=.*%VM_BOARD='${BOARD}'%" \
      -e "s%^VM_IMAGE=.*%VM_IMAGE=\"\${SCRIPT_DIR}/${image}\"%" \
      -e "s%^SECURE_BOOT=.*%SECURE_BOOT=${secure}%" \
      "${BUILD_LIBRARY_DIR}/standin_qemu_launcher.sh" > "${script}"
  if [[ -n ${ro} ]]; then
    sed -e "s%^VM_PFLASH_RO=.*%VM_PFLASH_RO=\"\${SCRIPT_DIR}/${ro}\"%" \
        -e "s%^VM_PFLASH_RW=.*%VM_PFLASH_RW=\"\${SCRIPT_DIR}/${rw}\"%" -i "${script}"
  fi
  chmod +x "${script}"
  cat > "${FLAGS_to}/$(dst_name "${type}" ".README")" <<README
If you have qemu installed (or in the SDK), you can start the image with:
  cd path/to/image
  ./$(basename "${script}") -display curses

SSH into that host with:
  ssh 127.0.0.1 -p 2222
README
  VM_GENERATED_FILES+=( "${script}" "${FLAGS_to}/$(dst_name "${type}" ".README")" )
}

if [[ ${VM_IMG_TYPE} == qemu_uefi ]]; then
  info "Writing qemu_uefi configuration"
  img_base=$(basename "${VM_DST_IMG}")
  case ${BOARD} in
    amd64-usr) fw_code=OvmfX64/OVMF_CODE_4M.qcow2; fw_vars=OvmfX64/OVMF_VARS_4M.qcow2
               sfw_code=OvmfX64/OVMF_CODE_4M.secboot.qcow2; sfw_vars=OvmfX64/OVMF_VARS_4M.secboot.qcow2 ;;
    arm64-usr) fw_code=ArmVirtQemu-AARCH64/QEMU_EFI.qcow2; fw_vars=ArmVirtQemu-AARCH64/QEMU_VARS.qcow2
               sfw_code=ArmVirtQemu-AARCH64/QEMU_EFI.secboot_INSECURE.qcow2; sfw_vars=ArmVirtQemu-AARCH64/QEMU_VARS.secboot_INSECURE.qcow2 ;;
  esac
  firmware "${fw_code}" "${FLAGS_to}/$(dst_name qemu_uefi _efi_code.qcow2)"
  firmware "${fw_vars}" "${FLAGS_to}/$(dst_name qemu_uefi _efi_vars.qcow2)"
  VM_GENERATED_FILES+=( "${FLAGS_to}/$(dst_name qemu_uefi _efi_code.qcow2)" "${FLAGS_to}/$(dst_name qemu_uefi _efi_vars.qcow2)" )
  write_launcher qemu_uefi "${img_base}" "$(dst_name qemu_uefi _efi_code.qcow2)" "$(dst_name qemu_uefi _efi_vars.qcow2)"
  if [[ ${BOARD} == amd64-usr ]]; then
    write_launcher qemu "$(basename "${VM_DST_IMG/qemu_uefi/qemu}")"
  fi
  firmware "${sfw_code}" "${FLAGS_to}/$(dst_name qemu_uefi_secure _efi_code.qcow2)"
  firmware "${sfw_vars}" "${FLAGS_to}/$(dst_name qemu_uefi_secure _efi_vars.qcow2)"
  VM_GENERATED_FILES+=( "${FLAGS_to}/$(dst_name qemu_uefi_secure _efi_code.qcow2)" "${FLAGS_to}/$(dst_name qemu_uefi_secure _efi_vars.qcow2)" )
  write_launcher qemu_uefi_secure "$(basename "${VM_DST_IMG/qemu_uefi/qemu_uefi_secure}")" \
    "$(dst_name qemu_uefi_secure _efi_code.qcow2)" "$(dst_name qemu_uefi_secure _efi_vars.qcow2)" 1
fi

rm -rf "${VM_TMP_DIR}"
trap - EXIT

compress_disk_images VM_GENERATED_FILES

okboat
command_completed
