# Stand-in ebuild (kiln test fixture): bash-parsable subset, see tests/standin_sdk/README.md
EAPI=8
SLOT="0/${PVR}"
KEYWORDS="amd64 arm64"
IUSE=""
DEPEND="=sys-kernel/coreos-modules-${PVR}"
RDEPEND="=sys-kernel/coreos-modules-${PVR}"
