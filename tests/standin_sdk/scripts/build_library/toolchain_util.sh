# shellcheck shell=bash
# Stand-in build_library/toolchain_util.sh (kiln test fixture): the binhost
# list of the real library, same behaviour as vendor
# build_library/toolchain_util.sh:133-152 (get_board_binhost).  The board
# helpers get_board_arch/chost/profile live in the stand-in common.sh.

# Usage: get_board_binhost board [version...]
# If no versions are specified the current version is used (the build id
# joins it only for containerised nightlies, [VERSION]+[BUILD_ID]).
get_board_binhost() {
    local board ver
    board="$1"
    shift

    if [[ $# -eq 0 ]]; then
        if [[ "${FLATCAR_BUILD_ID}" =~ ^nightly-.*$ ]] ; then
            set -- "${FLATCAR_VERSION_ID}+${FLATCAR_BUILD_ID}"
        else
            set -- "${FLATCAR_VERSION_ID}"
        fi
    fi

    for ver in "$@"; do
        echo "${FLATCAR_DEV_BUILDS}/boards/${board}/${ver}/pkgs/"
    done
}
