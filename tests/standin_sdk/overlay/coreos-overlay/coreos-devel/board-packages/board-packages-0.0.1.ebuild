# Stand-in ebuild (kiln test fixture): bash-parsable subset, see tests/standin_sdk/README.md
# Everything build_packages builds by default (real: coreos-devel/board-packages).
EAPI=8
SLOT="0"
KEYWORDS="amd64 arm64"
IUSE=""
RDEPEND="coreos-base/coreos
	app-containers/containerd
	app-containers/docker"
