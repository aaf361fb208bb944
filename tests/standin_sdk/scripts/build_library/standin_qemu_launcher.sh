#!/usr/bin/env bash
# shellcheck disable=SC2034  # SCRIPT_DIR, SECURE_BOOT, SSH_KEYS mirror the real launcher's variables (build_library/qemu_template.sh)
# Launcher written by the kiln stand-in image_to_vm.sh for Flatcar-style QEMU images.
# Usage: ./<this>.sh [-a authorized_keys] [-i ignition.json] [-p ssh_port] [-s] [-- qemu args]
# Networking is user-mode with restrict=on: the guest cannot reach anything,
# only the forwarded localhost ssh port reaches the guest.
SCRIPT_DIR=$(dirname "$(readlink -f "$0")")
VM_BOARD=
VM_NAME=
VM_IMAGE=
VM_MEMORY=
VM_PFLASH_RO=
VM_PFLASH_RW=
SECURE_BOOT=0
VM_NCPUS=2
SSH_PORT=2222
IGNITION_CONFIG_FILE=
SSH_KEYS=
SAFE_ARGS=0
usage() { sed -n '2,3p' "$0" | sed 's/^# //'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -a) SSH_KEYS=$2; shift 2 ;;
    -i) IGNITION_CONFIG_FILE=$2; shift 2 ;;
    -p) SSH_PORT=$2; shift 2 ;;
    -s) SAFE_ARGS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
case "${VM_BOARD}" in
  amd64-usr) QEMU=qemu-system-x86_64; MACHINE=(-machine q35) ; CPU=(-cpu max) ;;
  arm64-usr) QEMU=qemu-system-aarch64; MACHINE=(-machine virt) ; CPU=(-cpu max) ;;
esac
args=( -name "${VM_NAME}" -m "${VM_MEMORY}" -smp "${VM_NCPUS}" "${MACHINE[@]}" "${CPU[@]}" -nographic
       -nic "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:${SSH_PORT}-:22" )
if [[ ! -e /dev/kvm || ${SAFE_ARGS} -eq 1 ]]; then args+=( -accel tcg ); fi
if [[ -n ${VM_PFLASH_RO} ]]; then
  vars=$(mktemp --suffix=.qcow2); cp "${VM_PFLASH_RW}" "${vars}"
  args+=( -drive "if=pflash,unit=0,file=${VM_PFLASH_RO},format=qcow2,readonly=on"
          -drive "if=pflash,unit=1,file=${vars},format=qcow2" )
fi
if [[ -n ${VM_IMAGE} ]]; then
  fmt=raw; [[ ${VM_IMAGE} == *.img ]] && fmt=qcow2
  args+=( -drive "if=virtio,file=${VM_IMAGE},format=${fmt},snapshot=on" )
fi
if [[ -n ${IGNITION_CONFIG_FILE} ]]; then
  args+=( -fw_cfg "name=opt/org.flatcar-linux/config,file=${IGNITION_CONFIG_FILE}" )
fi
exec "${QEMU}" "${args[@]}" "$@"
