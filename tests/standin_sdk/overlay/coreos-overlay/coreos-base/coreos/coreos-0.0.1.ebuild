# Stand-in ebuild (kiln test fixture): bash-parsable subset, see tests/standin_sdk/README.md
# The production image's package set: build_image installs the RDEPEND closure
# (real: coreos-overlay/coreos-base/coreos/coreos-0.0.1.ebuild).
EAPI=8
SLOT="0"
KEYWORDS="amd64 arm64"
IUSE="selinux"
RDEPEND=">=sys-apps/baselayout-3.0.0
	sys-apps/systemd[selinux?]
	sys-apps/ignition
	coreos-base/update_engine
	coreos-base/coreos-au-key
	sys-kernel/coreos-kernel
	sys-libs/glibc
	amd64? ( sys-kernel/coreos-modules )
	arm64? ( sys-kernel/coreos-modules )"
