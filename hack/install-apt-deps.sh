#!/usr/bin/env bash
# Debian/Ubuntu packages kiln's tests need (run as root). The product itself needs far less on a
# builder: a container engine, git and zstd (roles/builder installs those).
#
# Installs only the packages that are missing, and upgrades nothing it does not have to: packages already
# installed stay at their version (never `apt-get upgrade`; `--no-upgrade` on install), and before
# installing it asks apt (a simulation) which installed packages the new ones would drag along to a newer
# version, and prints them. With KILN_APT_NO_UPGRADES=1 it refuses instead of upgrading them.
# apt-get and dpkg-query are taken from PATH.
set -euo pipefail
PKGS=(
  # SSH fleet, transfers, mirror
  openssh-server openssh-client rsync nginx-light cpio iproute2 curl
  # disk images for the stand-in SDK
  gdisk fdisk dosfstools mtools btrfs-progs squashfs-tools e2fsprogs erofs-utils debootstrap busybox-static grub-pc-bin
  # QEMU and firmware
  qemu-system-x86 qemu-system-arm qemu-utils ovmf qemu-efi-aarch64 systemd-boot-efi grub-efi-amd64-bin
  # containers; python3-docker: the fleet's builders are this machine in network namespaces, and the builder
  # role's packages (roles/builder/defaults/main.yml builder_packages_docker) must be here already: apt has no
  # network inside a fleet namespace
  docker.io containerd runc iptables python3-docker
  # compression, signing
  pbzip2 lbzip2 pigz zstd xz-utils bzip2 gnupg openssl git python-is-python3 procps
  # ansible-test sanity runs shellcheck on the shell scripts (skipped with a warning without it)
  shellcheck
  # kiln report: the HTML report is checked in a real headless browser (tests/integration/test_report_browser.py)
  chromium fonts-dejavu-core
)
export DEBIAN_FRONTEND=noninteractive

# installed = dpkg's status "install ok installed" (abbreviated "ii"); unknown names print nothing here
declare -A installed=()
while read -r name status; do
    [[ ${status} == ii* ]] && installed[${name%%:*}]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' -- "${PKGS[@]}" 2>/dev/null || true)

missing=()
for p in "${PKGS[@]}"; do
    [[ -n ${installed[${p}]:-} ]] || missing+=("${p}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-apt-deps: all ${#PKGS[@]} packages are installed; nothing to do"
    exit 0
fi
echo "install-apt-deps: installing ${#missing[@]} missing package(s): ${missing[*]}"

APT_INSTALL=(install -y -qq --no-install-recommends --no-upgrade)
apt-get update -qq
# "Inst pkg [old-version] (new-version ...)": an installed package apt would upgrade as a dependency
upgrades=$(apt-get "${APT_INSTALL[@]}" -s -- "${missing[@]}" | sed -n 's/^Inst \([^ ]*\) \[\([^]]*\)\] (\([^ ]*\).*/\1 \2 -> \3/p')
if [[ -n ${upgrades} ]]; then
    echo "install-apt-deps: the new packages need newer versions of these installed ones:"
    while read -r line; do echo "  ${line}"; done <<<"${upgrades}"
    if [[ ${KILN_APT_NO_UPGRADES:-0} == 1 ]]; then
        echo "install-apt-deps: KILN_APT_NO_UPGRADES=1: not installing; install the missing packages yourself" >&2
        exit 1
    fi
fi
apt-get "${APT_INSTALL[@]}" -- "${missing[@]}"
