# shellcheck shell=bash disable=SC2034  # sourced: its globals are for the scripts that source it
# Stand-in package helpers shared by build_packages and build_image (the packages themselves come from the
# overlays, see standin_portage.sh). Atom format here: category/package-version::repository

# standin_pkg_split ATOM -> sets PKG_CAT PKG_PF PKG_REPO
standin_pkg_split() {
  local atom=$1
  PKG_REPO=${atom##*::}
  atom=${atom%::*}
  PKG_CAT=${atom%%/*}
  PKG_PF=${atom#*/}
}
