# Stand-in ebuild (kiln test fixture): bash-parsable subset, see tests/standin_sdk/README.md
# Kernel config like coreos-modules: commonconfig-<ver> + <arch>_defconfig-<ver> (coreos-kernel.eclass
# find_archconfig), installed as the build tree's .config under /usr/lib/modules/<KV_FULL>/build
# (coreos-kernel.eclass install_build_source).
EAPI=8
SLOT="0/${PVR}"
KEYWORDS="amd64 arm64"
IUSE=""
RDEPEND=""
src_install() {
	local kv_full="${PV}-flatcar" c
	mkdir -p "${D}/usr/lib/modules/${kv_full}/build"
	for c in "commonconfig-${PV}" "commonconfig-${PV%.*}"; do
		[[ -f ${FILESDIR}/${c} ]] && break
	done
	local a
	for a in "${ARCH}_defconfig-${PVR}" "${ARCH}_defconfig-${PV}" "${ARCH}_defconfig-${PV%.*}" "${ARCH}_defconfig"; do
		[[ -f ${FILESDIR}/${a} ]] && break
	done
	cat "${FILESDIR}/${c}" "${FILESDIR}/${a}" > "${D}/usr/lib/modules/${kv_full}/build/.config"
}
