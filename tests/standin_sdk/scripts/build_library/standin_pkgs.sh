# shellcheck shell=bash disable=SC2034  # sourced: its globals are for the scripts that source it
# Stand-in package set: what build_packages "builds" and build_image "installs".
# Format: category/package-version::repository
STANDIN_BASE_PACKAGES=(
  "sys-apps/baselayout-3.6.8-r3::coreos-overlay"
  "sys-libs/glibc-2.41-r5::portage-stable"
  "sys-apps/systemd-256.9-r2::coreos-overlay"
  "sys-kernel/coreos-kernel-6.12.41::coreos-overlay"
  "sys-apps/ignition-2.21.0::coreos-overlay"
  "app-containers/containerd-1.7.27::portage-stable"
  "app-containers/docker-28.0.4::portage-stable"
  "coreos-base/coreos-au-key-0-r2::coreos-overlay"
  "coreos-base/update_engine-0.4.10-r20::coreos-overlay"
  "coreos-base/coreos-0.0.1-r349::coreos-overlay"
)

# standin_pkg_split ATOM -> sets PKG_CAT PKG_PF PKG_REPO
standin_pkg_split() {
  local atom=$1
  PKG_REPO=${atom##*::}
  atom=${atom%::*}
  PKG_CAT=${atom%%/*}
  PKG_PF=${atom#*/}
}

# Extra positional atoms (cat/pkg or =cat/pkg-ver) become cat/pkg-0.0.1
standin_extra_atom() {
  local a=${1#=}
  a=${a%%:*}
  if [[ ${a} =~ -[0-9][0-9.]*(-r[0-9]+)?$ ]]; then
    echo "${a}::coreos-overlay"
  else
    echo "${a}-0.0.1::coreos-overlay"
  fi
}

# standin_write_gpkg PKGDIR ATOM BOARD: deterministic GLEP 78 style gpkg.tar
standin_write_gpkg() {
  local pkgdir=$1 atom=$2 board=$3
  standin_pkg_split "${atom}"
  local work
  work=$(mktemp -d)
  mkdir -p "${work}/${PKG_PF}" "${work}/image/usr/share/standin-pkgs" "${work}/meta"
  printf '%s\n' "${PKG_CAT}/${PKG_PF}" "board=${board}" "repo=${PKG_REPO}" \
    > "${work}/image/usr/share/standin-pkgs/${PKG_CAT}_${PKG_PF}"
  printf '%s\n' "${PKG_CAT}" > "${work}/meta/CATEGORY"
  printf '%s\n' "${PKG_PF}" > "${work}/meta/PF"
  printf '%s\n' "${PKG_REPO}" > "${work}/meta/repository"
  printf '%s\n' "$(get_board_chost "${board}")" > "${work}/meta/CHOST"
  : > "${work}/${PKG_PF}/gpkg-1"
  standin_tar "${work}/meta.tar" "${work}/meta"
  standin_tar "${work}/image.tar" "${work}/image"
  zstd -q -19 -f "${work}/meta.tar" -o "${work}/${PKG_PF}/metadata.tar.zst"
  zstd -q -19 -f "${work}/image.tar" -o "${work}/${PKG_PF}/image.tar.zst"
  mkdir -p "${pkgdir}/${PKG_CAT}"
  standin_tar "${pkgdir}/${PKG_CAT}/${PKG_PF}.gpkg.tar" "${work}" \
    "${PKG_PF}/gpkg-1" "${PKG_PF}/metadata.tar.zst" "${PKG_PF}/image.tar.zst"
  rm -rf "${work}"
}

# standin_write_packages_index PKGDIR BOARD ATOM...
standin_write_packages_index() {
  local pkgdir=$1 board=$2; shift 2
  local atom f
  {
    echo "ARCH: $(get_board_arch "${board}")"
    echo "CBUILD: x86_64-pc-linux-gnu"
    echo "CHOST: $(get_board_chost "${board}")"
    echo "PACKAGES: $#"
    echo "PROFILE: $(get_board_profile "${board}")"
    echo "TIMESTAMP: ${STANDIN_EPOCH}"
    echo "VERSION: 0"
    for atom in "$@"; do
      standin_pkg_split "${atom}"
      f="${pkgdir}/${PKG_CAT}/${PKG_PF}.gpkg.tar"
      echo
      echo "BUILD_ID: 1"
      echo "BUILD_TIME: ${STANDIN_EPOCH}"
      echo "CPV: ${PKG_CAT}/${PKG_PF}"
      echo "MD5: $(md5sum < "${f}" | cut -d' ' -f1)"
      echo "PATH: ${PKG_CAT}/${PKG_PF}.gpkg.tar"
      echo "REPO: ${PKG_REPO}"
      echo "SHA1: $(sha1sum < "${f}" | cut -d' ' -f1)"
      echo "SIZE: $(stat -c %s "${f}")"
    done
    echo
  } > "${pkgdir}/Packages"
}

# standin_installed_atoms BOARD_ROOT: atoms recorded by build_packages
standin_installed_atoms() {
  local f="$1/var/lib/portage/standin-installed"
  [[ -s ${f} ]] && cat "${f}"
}
