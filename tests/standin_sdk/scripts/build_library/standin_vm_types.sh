# shellcheck shell=bash disable=SC2034  # sourced: its globals are for the scripts that source it
# VM image types accepted by image_to_vm.sh (same 32 names as the real
# build_library/vm_image_util.sh) and the few per-type options the stand-in uses.
VALID_IMG_TYPES=(
  akamai ami ami_vmdk azure cloudsigma cloudstack cloudstack_vhd digitalocean
  exoscale gce hetzner hyperv hyperv_vhdx iso kubevirt openstack openstack_mini
  oraclecloud parallels proxmoxve pxe qemu_uefi scaleway stackit vagrant
  vagrant_parallels virtualbox vmware vmware_ova vmware_raw xen nutanix
)
# type -> disk format
declare -A STANDIN_DISK_FORMAT=(
  [qemu_uefi]=qcow2 [virtualbox]=vmdk_ide [vagrant]=vmdk_ide [vagrant_parallels]=hdd
  [vmware]=vmdk_scsi [vmware_ova]=vmdk_stream [parallels]=hdd [ami_vmdk]=vmdk_stream
  [openstack]=qcow2 [openstack_mini]=qcow2 [oraclecloud]=qcow2 [pxe]=cpio [iso]=iso
  [cloudstack_vhd]=vhd [exoscale]=exoscale [azure]=vhd_fixed [hyperv]=vhd
  [hyperv_vhdx]=vhdx [cloudsigma]=qcow2 [scaleway]=qcow2 [stackit]=qcow2
  [kubevirt]=qcow2 [proxmoxve]=qcow2 [nutanix]=qcow2
)
declare -A STANDIN_DISK_EXTENSION=( [exoscale]=qcow2 [scaleway]=qcow2 [kubevirt]=qcow2 )
declare -A STANDIN_OEM_SYSEXT=(
  [qemu_uefi]=qemu [virtualbox]=virtualbox [vagrant]=vagrant [vagrant_parallels]=vagrant
  [vmware]=vmware [vmware_ova]=vmware [vmware_raw]=vmware [ami_vmdk]=ami [ami]=ami
  [openstack]=openstack [openstack_mini]=openstack [oraclecloud]=oraclecloud [gce]=gce
  [cloudstack]=cloudstack [cloudstack_vhd]=cloudstack [digitalocean]=digitalocean
  [exoscale]=exoscale [azure]=azure [hetzner]=hetzner [hyperv]=hyperv [hyperv_vhdx]=hyperv
  [cloudsigma]=cloudsigma [scaleway]=scaleway [stackit]=stackit [kubevirt]=kubevirt
  [akamai]=akamai [proxmoxve]=proxmoxve [nutanix]=nutanix
)
declare -A STANDIN_BUNDLE_FORMAT=( [vagrant]=box [vagrant_parallels]=box [vmware_ova]=ova [parallels]=pvm_tgz )

standin_disk_ext() {
  local t=$1 fmt=${STANDIN_DISK_FORMAT[$1]:-raw}
  if [[ -n ${STANDIN_DISK_EXTENSION[$t]:-} ]]; then echo "${STANDIN_DISK_EXTENSION[$t]}"; return; fi
  case ${fmt} in
    raw) echo bin ;; qcow2) echo img ;; cpio) echo cpio.gz ;;
    vmdk_ide|vmdk_scsi|vmdk_stream) echo vmdk ;; hdd) echo hdd ;;
    vhd|vhd_fixed) echo vhd ;; vhdx) echo vhdx ;; *) echo "${fmt}" ;;
  esac
}
