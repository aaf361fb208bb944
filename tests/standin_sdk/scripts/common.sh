# shellcheck shell=bash disable=SC2034,SC2154
# (SC2034: the globals are for the scripts that source this file; SC2154: FLAGS_* come from shflags' DEFINE_*)
# common.sh of the kiln stand-in Flatcar SDK (test fixture, not the real SDK).
# Provides the same globals/functions the real flatcar/scripts common.sh gives
# the build steps (SCRIPTS_DIR, DEFAULT_BUILD_ROOT, FLATCAR_VERSION*, info/warn/
# error/die, switch_to_strict_mode, ...), plus stand-in helpers (standin_*).
# Flags are parsed by the REAL lib/shflags/shflags of flatcar/scripts (the
# test fixture copies it into the checkout; see "Load shflags" below).

SCRIPT_NAME=$(basename "$0")
_STANDIN_ROOT=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")

V_VIDOFF=""; V_BOLD_RED=""; V_BOLD_GREEN=""; V_BOLD_YELLOW=""
if [[ -t 2 ]]; then
    V_VIDOFF=$'\e[0m'; V_BOLD_RED=$'\e[1;31m'; V_BOLD_GREEN=$'\e[1;32m'; V_BOLD_YELLOW=$'\e[1;33m'
fi

_message() {
    local prefix="$1${CROS_LOG_PREFIX:-${SCRIPT_NAME}}"
    shift
    local line
    if [[ $# -eq 0 || -z "$*" ]]; then
        echo -e "${prefix}:${V_VIDOFF}" >&2
        return
    fi
    while IFS= read -r line; do
        echo -e "${prefix}: ${line}${V_VIDOFF}" >&2
    done <<< "$*"
}
info()  { _message "${V_BOLD_GREEN}INFO    " "$*"; }
warn()  { _message "${V_BOLD_YELLOW}WARNING " "$*"; }
error() { _message "${V_BOLD_RED}ERROR   " "$*"; }

die_notrace() {
    set +e +u
    [[ $# -eq 0 ]] && set -- '(no error message given)'
    local line
    for line in "$@"; do
        error "${DIE_PREFIX:-}${line}"
    done
    exit 1
}
die() {
    set +e +u
    local i
    error "Backtrace:  (most recent call is last)"
    for ((i = ${#FUNCNAME[@]} - 1; i > 0; i--)); do
        error "$(printf '  file %s, line %s, called: %s' "${BASH_SOURCE[i]}" "${BASH_LINENO[i-1]}" "${FUNCNAME[i]}")"
    done
    error
    error "Error was:"
    DIE_PREFIX='  '
    die_notrace "$@"
}
die_err_trap() {
    local command=$1 result=$2
    set +e +u
    error
    error "Command failed:"
    DIE_PREFIX='  '
    die_notrace "Command '${command}' exited with nonzero code: ${result}"
}
switch_to_strict_mode() {
    set -e
    trap 'die_err_trap "${BASH_COMMAND:-command unknown}" "$?"' ERR
    if [[ $# -ne 0 ]]; then
        set "$@"
    fi
}
show_help_if_requested() {
    local opt
    for opt in "$@"; do
        if [[ ${opt} == "-h" || ${opt} == "--help" ]]; then
            flags_help
            exit 0
        fi
    done
}
# Inside the SDK like the real common.sh (vendor common.sh:27-32): /etc/debian_chroot,
# not an environment variable (sudo would drop it).  Host mode has no such file.
if [[ -e /etc/debian_chroot || ${STANDIN_HOST_MODE:-0} == 1 ]]; then
  INSIDE_CHROOT=1
else
  INSIDE_CHROOT=0
fi
assert_inside_chroot() {
    if [[ ${INSIDE_CHROOT} -ne 1 ]]; then
        echo "This script must be run inside the chroot.  Run this first:"
        echo "    cros_sdk"
        exit 1
    fi
}
command_completed() {
    local secs=$(( SECONDS ))
    info "Elapsed time (${SCRIPT_NAME}): $((secs / 60))m$((secs % 60))s"
}
okboat() { echo "OK"; }

# ---------------------------------------------------------------------------
# Directory layout.  Inside the stand-in SDK container the layout is the real
# one (/mnt/host/source/...).  In host mode (STANDIN_HOST_MODE=1, used when no
# container engine works) the same roles are mapped onto the scripts checkout:
#   /mnt/host/source/src/scripts -> <scripts>
#   /mnt/host/source/src/build   -> <scripts>/__build__/images
#   /mnt/host/source             -> <scripts>/sdk_container
#   /build                       -> <scripts>/__build__/standin-sysroot/build
if [[ ${STANDIN_HOST_MODE:-0} == 1 ]]; then
    SCRIPTS_DIR=${_STANDIN_ROOT}
    GCLIENT_ROOT=${SCRIPTS_DIR}/sdk_container
    DEFAULT_BUILD_ROOT=${CHROMEOS_BUILD_ROOT:-${SCRIPTS_DIR}/__build__/images}
    STANDIN_SYSROOT=${SCRIPTS_DIR}/__build__/standin-sysroot
else
    GCLIENT_ROOT=$(readlink -f "${_STANDIN_ROOT}/../..")
    SCRIPTS_DIR=${_STANDIN_ROOT}
    DEFAULT_BUILD_ROOT=${CHROMEOS_BUILD_ROOT:-${GCLIENT_ROOT}/src/build}
    STANDIN_SYSROOT=""
fi
REPO_ROOT=${GCLIENT_ROOT}
SRC_ROOT=${GCLIENT_ROOT}/src
BUILD_LIBRARY_DIR=${SCRIPTS_DIR}/build_library
REPO_MANIFESTS_DIR=${GCLIENT_ROOT}/.repo/manifests
STANDIN_CTL_DIR=${SCRIPTS_DIR}/.standin

# Map an SDK-side path to where it really is (identity inside the container).
standin_path() {
    local p=$1
    if [[ ${STANDIN_HOST_MODE:-0} != 1 ]]; then
        echo "${p}"; return
    fi
    local line src dest
    # relative paths are relative to the SDK-side cwd (the scripts dir)
    if [[ ${p} != /* ]]; then
        p=$(realpath -m "/mnt/host/source/src/scripts/${p}")
    fi
    while IFS= read -r line; do
        [[ -z ${line} ]] && continue
        src=${line%%:*}; dest=${line#*:}; dest=${dest%%:*}
        if [[ ${p} == "${dest}" || ${p} == "${dest}/"* ]]; then
            echo "${src}${p#"${dest}"}"; return
        fi
    done <<< "${STANDIN_MOUNTS:-}"
    case "${p}" in
        /mnt/host/source/src/scripts|/mnt/host/source/src/scripts/*) echo "${SCRIPTS_DIR}${p#/mnt/host/source/src/scripts}" ;;
        /home/sdk/trunk/src/scripts|/home/sdk/trunk/src/scripts/*) echo "${SCRIPTS_DIR}${p#/home/sdk/trunk/src/scripts}" ;;
        /mnt/host/source/src/build|/mnt/host/source/src/build/*) echo "${DEFAULT_BUILD_ROOT}${p#/mnt/host/source/src/build}" ;;
        /home/sdk/trunk/src/build|/home/sdk/trunk/src/build/*) echo "${DEFAULT_BUILD_ROOT}${p#/home/sdk/trunk/src/build}" ;;
        /mnt/host/source|/mnt/host/source/*) echo "${GCLIENT_ROOT}${p#/mnt/host/source}" ;;
        /home/sdk/trunk|/home/sdk/trunk/*) echo "${GCLIENT_ROOT}${p#/home/sdk/trunk}" ;;
        /build|/build/*) echo "${STANDIN_SYSROOT}${p}" ;;
        *) echo "${p}" ;;
    esac
}

DEFAULT_BOARD=""
if [[ -s ${SCRIPTS_DIR}/.default_board ]]; then
    DEFAULT_BOARD=$(<"${SCRIPTS_DIR}/.default_board")
fi
DEFAULT_BOARD="${DEFAULT_BOARD:-amd64-usr}"

FLATCAR_DEVELOPER_CONTAINER_NAME="flatcar_developer_container.bin"
FLATCAR_PRODUCTION_IMAGE_NAME="flatcar_production_image.bin"
FLATCAR_PRODUCTION_IMAGE_SYSEXT_BASE="flatcar_production_image_sysext.squashfs"

# Binary package servers.  The real values come from the SDK's settings; they
# are only defaults of FLATCAR_DEV_BUILDS here.
SETTING_BINPKG_SERVER_PROD="https://mirror.release.flatcar-linux.net"
SETTING_BINPKG_SERVER_DEV_CONTAINERISED="https://bincache.flatcar-linux.net"

# ---------------------------------------------------------------------------
# Versions: same rules as the real common.sh (vendor common.sh:285-290
# load_environment_var, :316-336 version.txt, :338-345 FLATCAR_VERSION,
# :375-380 FLATCAR_DEV_BUILDS), including the two gotchas:
#   * a FLATCAR_BUILD_ID in the environment makes version.txt's
#     FLATCAR_BUILD_ID, FLATCAR_DEV_BUILDS and FLATCAR_DEV_BUILDS_SDK ignored;
#   * an empty FLATCAR_BUILD_ID everywhere becomes the date.
load_environment_var() {
  local file="$1"; shift
  unset "${@}"
  # shellcheck disable=SC1090
  . <(grep -f <(printf "^%s=\n" "${@}") "${file}")
  # shellcheck disable=SC2163
  export "${@}"
}
if [[ -f "${REPO_MANIFESTS_DIR}/version.txt" ]]; then
  if [[ -n ${FLATCAR_BUILD_ID:-} ]]; then
    load_environment_var "${REPO_MANIFESTS_DIR}/version.txt" \
    FLATCAR_VERSION_ID FLATCAR_SDK_VERSION
  else
    load_environment_var "${REPO_MANIFESTS_DIR}/version.txt" \
    FLATCAR_VERSION_ID FLATCAR_BUILD_ID FLATCAR_SDK_VERSION \
    FLATCAR_DEV_BUILDS FLATCAR_DEV_BUILDS_SDK
    declare +x FLATCAR_BUILD_ID
  fi
  : "${FLATCAR_BUILD_ID:=$(date +%Y-%m-%d-%H%M)}"
else
  die "Unable to locate version.txt"
fi
if [[ ${COREOS_OFFICIAL:-0} -ne 1 && -n "${FLATCAR_BUILD_ID}" ]]; then
    FLATCAR_VERSION="${FLATCAR_VERSION_ID}+${FLATCAR_BUILD_ID}"
else
    FLATCAR_VERSION="${FLATCAR_VERSION_ID}"
fi
FLATCAR_VERSION_STRING="${FLATCAR_VERSION}"
if [[ "${FLATCAR_BUILD_ID}" =~ ^nightly-.*$ ]] ; then
    : "${FLATCAR_DEV_BUILDS:=${SETTING_BINPKG_SERVER_DEV_CONTAINERISED}}"
else
    : "${FLATCAR_DEV_BUILDS:=${SETTING_BINPKG_SERVER_PROD}}"
fi

# Load shflags: the real one, exactly like vendor common.sh:398-405.
if [[ -f ${SCRIPTS_DIR}/lib/shflags/shflags ]]; then
  . "${SCRIPTS_DIR}/lib/shflags/shflags" || die "Couldn't find shflags"
else
  . ./lib/shflags/shflags || die "Couldn't find shflags"
fi

NUM_JOBS=${NUM_JOBS:-$(grep -c ^processor /proc/cpuinfo)}

# ---------------------------------------------------------------------------
# Boards
get_board_arch() {
    case "$1" in
        amd64-usr) echo amd64 ;;
        arm64-usr) echo arm64 ;;
        *) die "Unknown board '$1'" ;;
    esac
}
get_board_chost() {
    case "$1" in
        amd64-usr) echo x86_64-cros-linux-gnu ;;
        arm64-usr) echo aarch64-cros-linux-gnu ;;
        *) die "Unknown board '$1'" ;;
    esac
}
get_board_profile() {
    echo "coreos-overlay:coreos/$(get_board_arch "$1")/generic"
}
split_ver() {
    local -n _out=$2
    IFS=. read -r -a _out <<< "$1"
}

# ---------------------------------------------------------------------------
# Determinism helpers.  All generated files use a fixed timestamp.
STANDIN_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export SOURCE_DATE_EPOCH=${STANDIN_EPOCH}
export TZ=UTC LC_ALL=C

# standin_tar OUT DIR [members...]: reproducible (sorted, fixed owner/mtime) tar
standin_tar() {
    local out=$1 dir=$2; shift 2
    [[ $# -eq 0 ]] && set -- .
    tar --sort=name --mtime="@${STANDIN_EPOCH}" --owner=0 --group=0 --numeric-owner \
        --format=gnu -C "${dir}" -cf "${out}" "$@"
}
standin_touch_tree() {
    find "$1" -exec touch -h -d "@${STANDIN_EPOCH}" {} +
}
standin_squashfs() {
    local dir=$1 out=$2
    standin_touch_tree "${dir}"
    rm -f "${out}"
    mksquashfs "${dir}" "${out}" -all-root -no-xattrs -noappend -quiet \
        -no-progress >/dev/null
}
# EROFS DDI stand-in (real sysexts are signed EROFS DDIs; ours are unsigned EROFS)
standin_erofs() {
    local dir=$1 out=$2
    standin_touch_tree "${dir}"
    rm -f "${out}"
    if command -v mkfs.erofs >/dev/null; then
        mkfs.erofs --quiet -T"${STANDIN_EPOCH}" -U 00000000-0000-0000-0000-000000000000 --all-root -x -1 \
            "${out}" "${dir}" >/dev/null
    else
        standin_squashfs "${dir}" "${out}"
    fi
}
# standin_compress FILE FORMAT: writes FILE.<format> (real tool choice, reproducible flags)
standin_compress() {
    local f=$1 fmt=$2
    touch -h -d "@${STANDIN_EPOCH}" "${f}"
    case "${fmt}" in
        none|"") return 0 ;;
        bz2) if command -v lbzip2 >/dev/null; then lbzip2 --compress --keep --force "${f}"; else bzip2 -9 --keep --force "${f}"; fi ;;
        gz) if command -v pigz >/dev/null; then pigz -n --keep --force "${f}"; else gzip -n --keep --force "${f}"; fi ;;
        zip) (cd "$(dirname "${f}")" && rm -f "$(basename "${f}").zip" && zip -X -q "$(basename "${f}").zip" "$(basename "${f}")") ;;
        zst) zstd --format=zstd -19 -k -q -f --no-progress "${f}" ;;
        *) die "Unsupported compression format ${fmt}" ;;
    esac
}
# compress_disk_images ARRAYNAME: same selection rules as release_util.sh
compress_disk_images() {
    local -n _files="$1"
    local filename fmt link_target
    local -a formats
    info "Compressing ${#_files[@]} images"
    for filename in "${_files[@]}"; do
        [[ ${filename} =~ \.(img|bin|vdi|vhd|vhdx|vmdk|qcow[2]?)$ ]] || continue
        IFS=, read -r -a formats <<< "${FLAGS_image_compression_formats}"
        local -A done_fmt=()
        for fmt in "${formats[@]}"; do
            [[ -n ${done_fmt[${fmt}]:-} ]] && continue
            done_fmt[${fmt}]=1
            [[ ${fmt} == none ]] && continue
            info "Compressing ${filename##*/} to ${fmt}"
            if [[ -L ${filename} ]]; then
                link_target=$(basename "$(readlink -f "${filename}")")
                ln -fs "${link_target}.${fmt}" "${filename}.${fmt}"
            else
                standin_compress "${filename}" "${fmt}"
            fi
        done
        unset done_fmt
        if [[ ${FLAGS_only_store_compressed} -eq ${FLAGS_TRUE} &&
              ${filename##*/} != flatcar_production_image.bin &&
              ${filename##*/} != flatcar_production_update.bin &&
              ",${FLAGS_image_compression_formats}," != *,none,* ]]; then
            info "Removing ${filename}"
            rm -f "${filename}"
        else
            info "Keeping ${filename}"
        fi
    done
}

# ---------------------------------------------------------------------------
# Stand-in control switches (see tests/standin_sdk/README.md)
#   .standin/fail  or STANDIN_FAIL_STEP  : step names that must fail
#   .standin/sleep or STANDIN_STEP_SLEEP : seconds each step sleeps first
_standin_step_name() {
    local s=${1%.sh}
    echo "${s}"
}
standin_step_begin() {
    local secs=${STANDIN_STEP_SLEEP:-}
    if [[ -z ${secs} && -s ${STANDIN_CTL_DIR}/sleep ]]; then
        secs=$(tr -d ' \n\t' < "${STANDIN_CTL_DIR}/sleep")
    fi
    if [[ -n ${secs} && ${secs} != 0 ]]; then
        info "stand-in: sleeping ${secs}s"
        sleep "${secs}"
    fi
}
standin_fail_requested() {
    local step want w
    step=$(_standin_step_name "$1")
    want="${STANDIN_FAIL_STEP:-}"
    if [[ -s ${STANDIN_CTL_DIR}/fail ]]; then
        want+=" $(tr ',\n' '  ' < "${STANDIN_CTL_DIR}/fail")"
    fi
    for w in ${want//,/ }; do
        [[ $(_standin_step_name "${w}") == "${step}" ]] && return 0
    done
    return 1
}
# standin_maybe_fail STEP PARTIAL_FILE
standin_maybe_fail() {
    local step=$1 partial=${2:-}
    standin_fail_requested "${step}" || return 0
    info "stand-in: starting ${step} (failure injected)"
    info "stand-in: resolving inputs for ${step}"
    info "stand-in: writing partial output"
    if [[ -n ${partial} ]]; then
        mkdir -p "$(dirname "${partial}")"
        printf 'partial output of %s (injected failure)\n' "${step}" > "${partial}"
    fi
    error "stand-in: injected failure in ${step}"
    die_notrace "${step} failed (stand-in failure switch)"
}

# Artifacts from the prepared disk assets (see build_library/standin_disk)
standin_assets_dir() {
    local a=""
    if [[ -s ${STANDIN_CTL_DIR}/assets ]]; then
        a=$(head -n 1 "${STANDIN_CTL_DIR}/assets")
    fi
    echo "${a}"
}
