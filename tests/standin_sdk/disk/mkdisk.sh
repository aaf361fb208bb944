#!/usr/bin/env bash
# mkdisk.sh --board amd64-usr|arm64-usr --version FLATCAR_VERSION --out FILE
#           [--group G] [--assets DIR] [--build-id ID] [--append "ARGS"] [--no-bootloader]
#
# Builds a small GPT disk with Flatcar's partition numbers, labels and type
# GUIDs that really boots in QEMU (amd64: SeaBIOS via GRUB i386-pc and UEFI via
# systemd-boot; arm64: UEFI via systemd-boot).  No loop devices or mounts: the
# partitions are built as files (mkfs.vfat+mtools, mkfs.ext4 -d) and dd'ed in.
# Assets come from prepare_assets.sh.  --no-bootloader leaves the ESP empty and
# writes no BIOS boot code (a disk that must never boot).
set -euo pipefail

BOARD="" VERSION="" OUT="" GROUP=developer BUILD_ID="" APPEND="" BOOTLOADER=1
ASSETS=${KILN_TEST_CACHE:-/var/cache/kiln-test}/boot-assets

die() { echo "mkdisk.sh: ERROR: $*" >&2; exit 1; }
usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --board) BOARD=$2; shift 2 ;;
        --version) VERSION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --group) GROUP=$2; shift 2 ;;
        --assets) ASSETS=$2; shift 2 ;;
        --build-id) BUILD_ID=$2; shift 2 ;;
        --append) APPEND=$2; shift 2 ;;
        --no-bootloader) BOOTLOADER=0; shift ;;
        -h|--help) usage 0 ;;
        *) echo "mkdisk.sh: unknown argument: $1" >&2; usage 2 >&2 ;;
    esac
done
case "$BOARD" in
    amd64-usr) ARCH=amd64 EFI_NAME=BOOTX64.EFI CONSOLE=ttyS0,115200n8 ;;
    arm64-usr) ARCH=arm64 EFI_NAME=BOOTAA64.EFI CONSOLE=ttyAMA0,115200n8 ;;
    *) die "--board must be amd64-usr or arm64-usr" ;;
esac
[ -n "$VERSION" ] || die "--version is required"
[ -n "$OUT" ] || die "--out is required"
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+(\+[A-Za-z0-9._-]+)?$ ]] || die "malformed --version: $VERSION"
[[ "$GROUP" =~ ^[A-Za-z0-9._-]+$ ]] || die "malformed --group: $GROUP"
A=$ASSETS/$ARCH
for f in vmlinuz initrd.img BOOT.EFI usr; do
    [ -e "$A/$f" ] || die "asset $A/$f missing: run prepare_assets.sh --arch $ARCH --dest $ASSETS"
done
if [ "$ARCH" = amd64 ] && [ "$BOOTLOADER" = 1 ]; then
    if [ ! -f "$A/grub/core.img" ] || [ ! -f "$A/grub/boot.img" ]; then die "GRUB assets missing in $A/grub"; fi
fi
for t in sgdisk mkfs.vfat mmd mcopy mkfs.ext4 dd truncate; do
    command -v "$t" >/dev/null || die "$t not found (see README: Debian packages gdisk mtools dosfstools e2fsprogs coreutils)"
done

export LC_ALL=C TZ=UTC
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH MTOOLS_SKIP_CHECK=1
VERSION_ID=${VERSION%%+*}
if [ -z "$BUILD_ID" ]; then
    if [ "$VERSION" != "$VERSION_ID" ]; then BUILD_ID=${VERSION#*+}
    else BUILD_ID=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d-%H%M); fi
fi

# Fixed identifiers (deterministic output).  USR-A/USR-B use Flatcar's own
# well-known partition UUIDs from build_library/disk_layout.json.
DISK_GUID=6b696c6e-0000-4000-8000-000000000000
T_EFI=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
T_BIOS=21686148-6449-6E6F-744E-656564454649
T_USR=5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6
T_DATA=0FC63DAF-8483-4772-8E79-3D69D8477DE4
T_RESERVED=C95DC21A-DF0E-4340-8D7B-26CBFA9A03E0
T_RESIZE=3884DD41-8582-4404-B9A8-E9B84F2DF50E
U_USR_A=7130c94a-213a-4e5a-8e26-6cce9662f132
U_USR_B=e03dd35c-7c2d-4a47-b3fe-27f15780a57c

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiln-mkdisk.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

mib_of() { du -s --apparent-size --block-size=1M "$@" | awk '{ s += $1 } END { print s }'; }

# ---- sizes (MiB) -----------------------------------------------------------
ESP_MB=$(( $(mib_of "$A/vmlinuz" "$A/initrd.img" "$A/BOOT.EFI") + 4 ))
[ "$ESP_MB" -ge 16 ] || ESP_MB=16
USR_MB=$(( $(mib_of "$A/usr") * 5 / 4 + 4 ))
BIOS_MB=1 USRB_MB=2 OEM_MB=4 OEMCFG_MB=1 ROOT_MB=8
declare -A START SIZE
pos=1
for p in 1:$ESP_MB 2:$BIOS_MB 3:$USR_MB 4:$USRB_MB 6:$OEM_MB 7:$OEMCFG_MB 9:$ROOT_MB; do
    n=${p%%:*}; s=${p#*:}
    START[$n]=$((pos * 2048)); SIZE[$n]=$((s * 2048)); pos=$((pos + s))
done
TOTAL_MB=$((pos + 1))
IMG=$WORK/disk.img
truncate -s "${TOTAL_MB}M" "$IMG"

# ---- GPT (sgdisk without -q: -q once silently produced an empty table) ------
sg=(sgdisk -o -U "$DISK_GUID")
part() {  # part NUM LABEL TYPE GUID
    sg+=(-n "$1:${START[$1]}:$(( START[$1] + SIZE[$1] - 1 ))" -c "$1:$2" -t "$1:$3" -u "$1:$4")
}
part 1 EFI-SYSTEM "$T_EFI" 6b696c6e-0001-4000-8000-000000000001
part 2 BIOS-BOOT "$T_BIOS" 6b696c6e-0002-4000-8000-000000000002
part 3 USR-A "$T_USR" "$U_USR_A"
part 4 USR-B "$T_USR" "$U_USR_B"
part 6 OEM "$T_DATA" 6b696c6e-0006-4000-8000-000000000006
part 7 OEM-CONFIG "$T_RESERVED" 6b696c6e-0007-4000-8000-000000000007
part 9 ROOT "$T_RESIZE" 6b696c6e-0009-4000-8000-000000000009
# USR-A: GPT priority 1 + successful, like a freshly built Flatcar image.
sg+=(-A 3:set:48 -A 3:set:56 "$IMG")
"${sg[@]}" > "$WORK/sgdisk.log" 2>&1 || { cat "$WORK/sgdisk.log" >&2; die "sgdisk failed"; }
sgdisk -v "$IMG" > "$WORK/verify.log" 2>&1 || { cat "$WORK/verify.log" >&2; die "GPT verification failed"; }
[ "$(sgdisk -p "$IMG" | grep -c '^ *[0-9]')" -eq 7 ] || { sgdisk -p "$IMG" >&2; die "GPT has not 7 partitions"; }

put() {  # put PARTNUM FILE: dd a partition image into place
    dd if="$2" of="$IMG" bs=512 seek="${START[$1]}" conv=notrunc,sparse status=none
}
ext4img() {  # ext4img FILE MB LABEL UUID [DIR]
    local args=(-q -F -t ext4 -L "$3" -U "$4" -E "hash_seed=$4,root_owner=0:0" -N 1024)
    [ -n "${5:-}" ] && args+=(-d "$5")
    truncate -s "${2}M" "$1"
    mkfs.ext4 "${args[@]}" "$1" > "$WORK/mkfs.log" 2>&1 || { cat "$WORK/mkfs.log" >&2; die "mkfs.ext4 $3 failed"; }
}

CMDLINE="root=LABEL=ROOT mount.usr=PARTUUID=$U_USR_A mount.usrflags=ro rootflags=rw consoleblank=0"
# No "quiet": real Flatcar's grub.cfg passes none, so its console shows the kernel log (and with it
# "Linux version" and "Run /init as init process", the phase boundaries kiln's boot check times).
CMDLINE="$CMDLINE flatcar.first_boot=detected flatcar.oem.id=qemu console=$CONSOLE"
[ -n "$APPEND" ] && CMDLINE="$CMDLINE $APPEND"

# ---- ESP (vfat, mtools) -----------------------------------------------------
ESP=$WORK/esp.img
truncate -s "${ESP_MB}M" "$ESP"
mkfs.vfat -n EFI-SYSTEM -i 6b696c6e --invariant "$ESP" > /dev/null 2>&1 \
    || mkfs.vfat -n EFI-SYSTEM -i 6b696c6e "$ESP" > /dev/null
if [ "$BOOTLOADER" = 1 ]; then
    S=$WORK/esp; mkdir -p "$S"
    cp "$A/BOOT.EFI" "$S/$EFI_NAME"
    cp "$A/vmlinuz" "$S/vmlinuz-a"
    cp "$A/initrd.img" "$S/initrd-a"
    # Menu timeouts of 1 s, as real Flatcar's GRUB (build_library/grub.cfg: "set timeout=1"), which
    # no QEMU setting can shorten: a boot check sees the same wait on the stand-in as on a real image.
    printf 'default flatcar-a.conf\ntimeout 1\neditor no\n' > "$S/loader.conf"
    printf 'title Flatcar Container Linux %s (USR-A)\nversion %s\nlinux /flatcar/vmlinuz-a\ninitrd /flatcar/initrd-a\noptions %s\n' \
        "$VERSION" "$VERSION" "$CMDLINE" > "$S/flatcar-a.conf"
    cat > "$S/grub.cfg" <<EOF
# kiln stand-in: GRUB i386-pc (BIOS) config, found via core.img's embedded
# "search --label EFI-SYSTEM; set prefix=(\$root)/flatcar/grub".
set timeout=1
serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1
terminal_input serial console
terminal_output serial console
menuentry "Flatcar Container Linux $VERSION (USR-A)" {
    linux /flatcar/vmlinuz-a $CMDLINE
    initrd /flatcar/initrd-a
}
EOF
    : > "$S/first_boot"
    touch -d "@$SOURCE_DATE_EPOCH" "$S"/*
    mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/flatcar ::/flatcar/grub
    mcopy -m -i "$ESP" "$S/$EFI_NAME" ::/EFI/BOOT/$EFI_NAME
    mcopy -m -i "$ESP" "$S/loader.conf" ::/loader/loader.conf
    mcopy -m -i "$ESP" "$S/flatcar-a.conf" ::/loader/entries/flatcar-a.conf
    mcopy -m -i "$ESP" "$S/vmlinuz-a" "$S/initrd-a" "$S/first_boot" ::/flatcar/
    mcopy -m -i "$ESP" "$S/grub.cfg" ::/flatcar/grub/grub.cfg
fi
put 1 "$ESP"

# ---- BIOS boot: GRUB boot.img in the MBR, core.img in BIOS-BOOT -------------
# Does by hand what grub-bios-setup does for a GPT disk with a BIOS boot
# partition (grub-core/boot/i386/pc/boot.S, diskboot.S offsets).
le() {  # le VALUE NBYTES -> little-endian bytes on stdout
    local v=$1 i out=""
    for ((i = 0; i < $2; i++)); do out="$out\\x$(printf '%02x' $(( (v >> (8 * i)) & 255 )))"; done
    printf '%b' "$out"
}
patch() { dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }  # stdin -> FILE at OFFSET
if [ "$ARCH" = amd64 ] && [ "$BOOTLOADER" = 1 ]; then
    CORE=$WORK/core.img
    cp "$A/grub/core.img" "$CORE"
    core_sectors=$(( ($(stat -c %s "$CORE") + 511) / 512 ))
    [ "$core_sectors" -le "${SIZE[2]}" ] || die "core.img ($core_sectors sectors) does not fit BIOS-BOOT"
    core_lba=${START[2]}
    # diskboot.img blocklist (last 12 bytes of core.img's first sector):
    # start LBA of the rest (u64), sector count (u16), load segment 0x820 (u16)
    le $((core_lba + 1)) 8 | patch "$CORE" $((0x1f4))
    le $((core_sectors - 1)) 2 | patch "$CORE" $((0x1fc))
    le $((0x820)) 2 | patch "$CORE" $((0x1fe))
    put 2 "$CORE"
    BOOT=$WORK/boot.img
    head -c 440 "$A/grub/boot.img" > "$BOOT"
    le "$core_lba" 8 | patch "$BOOT" $((0x5c))       # GRUB_BOOT_MACHINE_KERNEL_SECTOR
    printf '\xff' | patch "$BOOT" $((0x64))           # GRUB_BOOT_MACHINE_BOOT_DRIVE: use BIOS drive
    printf '\x90\x90' | patch "$BOOT" $((0x66))       # GRUB_BOOT_MACHINE_DRIVE_CHECK -> nop nop
    dd if="$BOOT" of="$IMG" bs=440 count=1 conv=notrunc status=none   # keep the protective MBR table
fi

# ---- USR-A (ext4; real Flatcar uses btrfs+verity) ---------------------------
U=$WORK/usr
cp -a "$A/usr" "$U"
mkdir -p "$U/share/flatcar"
cat > "$U/lib/os-release" <<EOF
NAME="Flatcar Container Linux by Kinvolk"
ID=flatcar
ID_LIKE=coreos
VERSION=$VERSION
VERSION_ID=$VERSION_ID
BUILD_ID=$BUILD_ID
SYSEXT_LEVEL=1.0
PRETTY_NAME="Flatcar Container Linux by Kinvolk $VERSION (Oklo)"
ANSI_COLOR="38;5;75"
HOME_URL="https://flatcar.org/"
BUG_REPORT_URL="https://issues.flatcar.org"
FLATCAR_BOARD="$BOARD"
CPE_NAME="cpe:2.3:o:flatcar-linux:flatcar_linux:$VERSION:*:*:*:*:*:*:*"
EOF
printf 'SERVER=https://public.update.flatcar-linux.net/v1/update/\nGROUP=%s\n' "$GROUP" > "$U/share/flatcar/update.conf"
printf 'FLATCAR_RELEASE_VERSION=%s\nFLATCAR_RELEASE_BOARD=%s\nFLATCAR_RELEASE_APPID={e96281a6-d1af-4bde-9a0a-97b76e56dc57}\n' \
    "$VERSION" "$BOARD" > "$U/share/flatcar/release"
find "$U" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
ext4img "$WORK/usr.img" "$USR_MB" USR-A 6b696c6e-0003-4000-8000-0000000000f3 "$U"
put 3 "$WORK/usr.img"

# ---- OEM (ext4; real: btrfs), ROOT (ext4), USR-B / OEM-CONFIG left raw ------
O=$WORK/oem; mkdir -p "$O"
printf 'set oem_id="qemu"\n' > "$O/grub.cfg"
touch -d "@$SOURCE_DATE_EPOCH" "$O/grub.cfg" "$O"
ext4img "$WORK/oem.img" "$OEM_MB" OEM 6b696c6e-0006-4000-8000-0000000000f6 "$O"
put 6 "$WORK/oem.img"
ext4img "$WORK/root.img" "$ROOT_MB" ROOT 6b696c6e-0009-4000-8000-0000000000f9
put 9 "$WORK/root.img"

mkdir -p "$(dirname "$OUT")"
mv "$IMG" "$OUT.tmp.$$" && mv "$OUT.tmp.$$" "$OUT"
echo "mkdisk.sh: wrote $OUT (${TOTAL_MB} MiB, board $BOARD, version $VERSION, group $GROUP$([ "$BOOTLOADER" = 1 ] || echo ', NO bootloader'))" >&2
