#!/usr/bin/env bash
# prepare_assets.sh [--arch amd64|arm64|all] [--dest DIR]
#
# Test-setup step of the kiln stand-in Flatcar disk: downloads a few packages
# from Debian's archive ONLY (apt-get download, with private apt lists so the
# system apt configuration is never touched), extracts them with dpkg-deb and
# builds per-arch boot assets that mkdisk.sh turns into bootable GPT disks:
#
#   DIR/<arch>/vmlinuz          Debian kernel (EFI-stub capable; arm64 Image)
#   DIR/<arch>/initrd.img       gzip'd newc cpio: busybox, /init, ignition subset, modules
#   DIR/<arch>/BOOT.EFI         systemd-boot (systemd-bootx64.efi / systemd-bootaa64.efi)
#   DIR/<arch>/usr/             tree for the USR-A partition (busybox, stage2, dropbear on amd64)
#   DIR/<arch>/grub/boot.img, core.img   (amd64) GRUB i386-pc for BIOS boot
#   DIR/<arch>/stamp            resolved package versions + digest of the guest scripts
#
# Idempotent: nothing is downloaded when the stamp matches the candidate
# versions and the guest scripts.  Needs network access to the Debian mirror
# configured for apt (only when the cache is cold or stale).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARCHES=all
DEST=${KILN_TEST_CACHE:-/var/cache/kiln-test}/boot-assets

usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCHES=$2; shift 2 ;;
        --dest) DEST=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "prepare_assets.sh: unknown argument: $1" >&2; usage 2 >&2 ;;
    esac
done
case "$ARCHES" in
    all) ARCHES="amd64 arm64" ;;
    amd64|arm64) ;;
    *) echo "prepare_assets.sh: --arch must be amd64, arm64 or all" >&2; exit 2 ;;
esac

case "${KILN_STANDIN_KERNEL:-cloud}" in
    cloud|generic) ;;
    *) echo "prepare_assets.sh: KILN_STANDIN_KERNEL must be cloud or generic" >&2; exit 2 ;;
esac

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export LC_ALL=C
log() { echo "prepare_assets[$ARCH]: $*" >&2; }
die() { echo "prepare_assets[$ARCH]: ERROR: $*" >&2; exit 1; }

# Kernel: Debian's cloud flavour (linux-image-cloud-<arch>). Its amd64 bzImage is LZ4-compressed where the
# generic one is XZ: under TCG the decompressor alone took ~5-9 s of an amd64 boot with the generic kernel
# and takes <1 s with the cloud one (docs/performance.md). It has every driver the guest needs
# (virtio-pci/blk/net, fw_cfg, ext4, 8250 and PL011 consoles, EFI stub). KILN_STANDIN_KERNEL=generic
# selects linux-image-<arch> instead.
kernel_meta() {
    case "${KILN_STANDIN_KERNEL:-cloud}" in
        cloud) echo "linux-image-cloud-$1" ;;
        generic) echo "linux-image-$1" ;;
    esac
}

# Modules the guest needs (Debian builds them as modules); dependencies are
# resolved from each .ko's modinfo "depends=" at build time.
MODULES="qemu_fw_cfg virtio_pci virtio_blk virtio_net crc32c_generic ext4"

apt_opts() {  # private lists + cache per arch: never touches the system's apt state
    local d=$DEST/.apt/$1
    echo "-o Dir::State::Lists=$d/lists -o Dir::Cache=$d/cache" \
         "-o APT::Architecture=$1 -o APT::Architectures::=$1 -o APT::Sandbox::User=root"
}

# ---- module dependency resolution -------------------------------------------
mod_file() {  # path of module $1 under $MODROOT (names may use - or _)
    local n=$1 alt
    alt=$(echo "$n" | tr '_' '-')
    find "$MODROOT" \( -name "$n.ko*" -o -name "$alt.ko*" \) -print | head -n1
}
mod_plain() {  # uncompressed copy of module file $1 into $2
    case "$1" in
        *.ko) cp "$1" "$2" ;;
        *.ko.xz) xz -dc "$1" > "$2" ;;
        *.ko.zst) zstd -qdc "$1" > "$2" ;;
        *.ko.gz) gzip -dc "$1" > "$2" ;;
        *) die "unknown module format: $1" ;;
    esac
}
RESOLVED=" "
mod_resolve() {  # append module $1 and its deps (deps first) to $ORDER
    local n=$1 f deps d
    n=$(echo "$n" | tr '-' '_')
    case "$RESOLVED" in *" $n "*) return 0 ;; esac
    RESOLVED="$RESOLVED$n "
    f=$(mod_file "$n")
    if [ -z "$f" ]; then
        if grep -q "/$n.ko" "$MODROOT/modules.builtin" 2>/dev/null; then return 0; fi
        die "kernel module $n not found (neither module nor builtin)"
    fi
    mod_plain "$f" "$WORK/initrd/lib/modules/$n.ko"
    deps=$(tr '\0' '\n' < "$WORK/initrd/lib/modules/$n.ko" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' ')
    for d in $deps; do mod_resolve "$d"; done
    ORDER="$ORDER $n"
}

build_arch() {
    ARCH=$1
    local out=$DEST/$ARCH kpkg kver pkgs p v stamp libdir efi_name
    O=$(apt_opts "$ARCH")
    mkdir -p "$DEST/.apt/$ARCH/lists/partial" "$DEST/.apt/$ARCH/cache/archives/partial"
    log "apt-get update (private lists in $DEST/.apt/$ARCH)"
    # shellcheck disable=SC2086
    apt-get $O -qq update >/dev/null || die "apt-get update failed (is the Debian mirror reachable?)"
    # shellcheck disable=SC2086
    kpkg=$(apt-cache $O depends "$(kernel_meta "$ARCH")" | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    [ -n "$kpkg" ] || die "cannot resolve the kernel ABI package from $(kernel_meta "$ARCH")"
    pkgs="$kpkg busybox-static systemd-boot-efi"
    if [ "$ARCH" = amd64 ]; then
        pkgs="$pkgs grub-pc-bin dropbear-bin libc6 libcrypt1 zlib1g libtomcrypt1 libtommath1 libgmp10"
    fi
    stamp=""
    local policy
    # shellcheck disable=SC2086
    policy=$(apt-cache $O policy $pkgs 2>/dev/null | awk '/^[^ ].*:$/ { sub(/:.*$/, ""); p = $0 } /^  Candidate:/ { print p "=" $2 }')
    for p in $pkgs; do
        v=$(printf '%s\n' "$policy" | awk -F= -v p="$p" '$1 == p { print $2; exit }')
        case "$v" in ""|"(none)") die "no candidate version for $p" ;; esac
        stamp="$stamp$p=$v"$'\n'
    done
    stamp="${stamp}guest=$(cat "$HERE"/guest/* "$HERE/prepare_assets.sh" | sha256sum | cut -d' ' -f1)"$'\n'
    if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "${stamp%$'\n'}" ] \
        && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] && [ -f "$out/BOOT.EFI" ]; then
        log "up to date ($kpkg)"
        return 0
    fi
    WORK=$(mktemp -d "$DEST/.work-$ARCH.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    mkdir -p "$WORK/x"
    # .deb cache: only packages whose candidate version is not there yet are fetched
    local debs=$DEST/.apt/$ARCH/debs missing="" want="" f
    mkdir -p "$debs"
    while IFS='=' read -r p v; do
        case "$p" in ""|guest) continue ;; esac
        f=$(find "$debs" -maxdepth 1 -name "${p}_${v//:/%3a}_*.deb" 2>/dev/null | head -n1 || true)
        if [ -z "$f" ]; then missing="$missing $p"; fi
    done <<< "$stamp"
    if [ -n "$missing" ]; then
        log "downloading:$missing"
        # shellcheck disable=SC2086
        (cd "$debs" && apt-get $O -qq download $missing >/dev/null) || die "apt-get download failed"
    fi
    while IFS='=' read -r p v; do
        case "$p" in ""|guest) continue ;; esac
        f=$(find "$debs" -maxdepth 1 -name "${p}_${v//:/%3a}_*.deb" 2>/dev/null | head -n1 || true)
        [ -n "$f" ] || die "download of $p=$v did not produce a .deb"
        want="$want $f"
        dpkg-deb -x "$f" "$WORK/x"
    done <<< "$stamp"
    for f in "$debs"/*.deb; do  # drop superseded versions
        case " $want " in *" $f "*) ;; *) rm -f "$f" ;; esac
    done

    # kernel
    kver=${kpkg#linux-image-}
    local kimg="$WORK/x/boot/vmlinuz-$kver"
    [ -f "$kimg" ] || die "kernel image missing in $kpkg"
    mkdir -p "$WORK/out"
    if [ "$(head -c2 "$kimg" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
        gzip -dc "$kimg" > "$WORK/out/vmlinuz"   # UEFI cannot start a gzip'd Image
    else
        cp "$kimg" "$WORK/out/vmlinuz"
    fi

    # initramfs
    mkdir -p "$WORK/initrd"/{bin,sbin,dev,proc,sys,run,tmp,sysroot,lib/modules,lib/kiln-standin}
    cp "$WORK/x/bin/busybox" "$WORK/initrd/bin/busybox"
    ln -s busybox "$WORK/initrd/bin/sh"
    install -m 0755 "$HERE/guest/init" "$WORK/initrd/init"
    install -m 0644 "$HERE/guest/ignition.sh" "$HERE/guest/ignition.awk" "$WORK/initrd/lib/kiln-standin/"
    MODROOT="$WORK/x/lib/modules/$kver"
    [ -d "$MODROOT" ] || MODROOT="$WORK/x/usr/lib/modules/$kver"
    ORDER=""; RESOLVED=" "
    for p in $MODULES; do mod_resolve "$p"; done
    # shellcheck disable=SC2086
    printf '%s\n' $ORDER > "$WORK/initrd/lib/modules/load.order"
    log "modules: $ORDER"
    mknod -m 600 "$WORK/initrd/dev/console" c 5 1 2>/dev/null || true
    mknod -m 666 "$WORK/initrd/dev/null" c 1 3 2>/dev/null || true
    find "$WORK/initrd" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    (cd "$WORK/initrd" && find . | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
        | gzip -9 -n > "$WORK/out/initrd.img"

    # USR-A tree (os-release is added per image by mkdisk.sh)
    local u="$WORK/out/usr"
    mkdir -p "$u/bin" "$u/sbin" "$u/lib/kiln-standin" "$u/share/baselayout" "$u/share/flatcar" "$u/lib64"
    cp "$WORK/x/bin/busybox" "$u/bin/busybox"
    local applets
    applets=$("$u/bin/busybox" --list 2>/dev/null || busybox --list 2>/dev/null || echo "sh ash cat ls mount sleep")
    for p in $applets; do
        case "$p" in busybox) continue ;; esac
        [ -e "$u/bin/$p" ] || ln -s busybox "$u/bin/$p"
    done
    install -m 0755 "$HERE/guest/stage2" "$u/lib/kiln-standin/stage2"
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'core:x:500:500:Flatcar Admin:/home/core:/bin/sh' \
        'sshd:x:204:204:sshd:/var/empty:/sbin/nologin' > "$u/share/baselayout/passwd"
    printf '%s\n' 'root:x:0:' 'core:x:500:' 'sudo:x:150:core' 'sshd:x:204:' > "$u/share/baselayout/group"
    printf '%s\n' /bin/sh /usr/bin/sh > "$u/share/baselayout/shells"
    if [ "$ARCH" = amd64 ]; then
        libdir=lib/x86_64-linux-gnu
        mkdir -p "$u/$libdir"
        cp "$WORK/x/usr/sbin/dropbear" "$u/sbin/dropbear"
        cp "$WORK/x/usr/bin/dropbearkey" "$u/bin/dropbearkey"
        for p in libc.so.6 ld-linux-x86-64.so.2 libcrypt.so.1 libz.so.1 libtomcrypt.so.1 libtommath.so.1 libgmp.so.10; do
            local f
            f=$(find "$WORK/x/lib" "$WORK/x/usr/lib" -name "$p" 2>/dev/null | head -n1)
            [ -n "$f" ] || die "library $p not found in the downloaded packages"
            cp -L "$f" "$u/$libdir/$p"
        done
        ln -sf "../$libdir/ld-linux-x86-64.so.2" "$u/lib64/ld-linux-x86-64.so.2"
        # GRUB i386-pc (BIOS): boot.img + core.img with an embedded config that finds
        # the ESP by its filesystem label and reads /flatcar/grub/grub.cfg from it.
        command -v grub-mkimage >/dev/null || die "grub-mkimage not found: install Debian package grub-common"
        local gd="$WORK/x/usr/lib/grub/i386-pc"
        mkdir -p "$WORK/out/grub"
        # shellcheck disable=SC2016  # $root is GRUB's variable, written literally
        printf '%s\n' 'search --no-floppy --label --set=root EFI-SYSTEM' 'set prefix=($root)/flatcar/grub' \
            > "$WORK/early.cfg"
        grub-mkimage -d "$gd" -O i386-pc -o "$WORK/out/grub/core.img" -c "$WORK/early.cfg" \
            -p /flatcar/grub biosdisk part_gpt fat ext2 normal linux search search_label \
            configfile echo test serial terminal gzio sleep
        cp "$gd/boot.img" "$WORK/out/grub/boot.img"
        efi_name=systemd-bootx64.efi
    else
        efi_name=systemd-bootaa64.efi
    fi
    cp "$WORK/x/usr/lib/systemd/boot/efi/$efi_name" "$WORK/out/BOOT.EFI"
    find "$WORK/out/usr" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    printf '%s' "${stamp%$'\n'}" > "$WORK/out/stamp"
    printf '%s\n' "$kver" > "$WORK/out/kernel-release"

    rm -rf "$out.old"
    [ -d "$out" ] && mv "$out" "$out.old"
    mv "$WORK/out" "$out"
    rm -rf "$out.old" "$WORK"
    trap - EXIT
    log "ready in $out ($kpkg, $(du -sh "$out" | cut -f1))"
}

mkdir -p "$DEST"
for a in $ARCHES; do build_arch "$a"; done
