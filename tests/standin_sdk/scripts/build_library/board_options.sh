# shellcheck shell=bash disable=SC2034  # sourced: its globals are for the scripts that source it
# Stand-in board_options.sh: sets BOARD/BOARD_ROOT/ARCH and reads the board's
# make.conf exactly like the real library does, so a missing board root fails
# the same way (bash "No such file or directory" + die).
if [ -z "${FLAGS_board}" ]; then
  error "--board is required."
  exit 1
fi

BOARD="${FLAGS_board}"
BOARD_ROOT="$(standin_path "/build/${BOARD}")"
ARCH=$(get_board_arch "${BOARD}")

# What cross-build are we targeting?
. "${BOARD_ROOT}/etc/portage/make.conf" || die
