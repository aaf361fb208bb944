#!/usr/bin/env bash
# Debian/Ubuntu packages kiln's tests need (run as root). The product itself needs far less on a
# builder: a container engine, git and zstd (roles/builder installs those).
set -euo pipefail
PKGS=(
  # SSH fleet, transfers, mirror
  openssh-server openssh-client rsync nginx-light cpio iproute2 curl
  # disk images for the stand-in SDK
  gdisk fdisk dosfstools mtools btrfs-progs squashfs-tools e2fsprogs erofs-utils debootstrap busybox-static grub-pc-bin
  # QEMU and firmware
  qemu-system-x86 qemu-system-arm qemu-utils ovmf qemu-efi-aarch64 systemd-boot-efi grub-efi-amd64-bin
  # containers
  docker.io containerd runc iptables
  # compression, signing
  pbzip2 lbzip2 pigz zstd xz-utils bzip2 gnupg openssl git python-is-python3 procps
  # ansible-test sanity runs shellcheck on the shell scripts (skipped with a warning without it)
  shellcheck
)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PKGS[@]}"
