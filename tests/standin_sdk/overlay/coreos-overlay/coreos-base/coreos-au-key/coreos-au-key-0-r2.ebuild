# Stand-in ebuild (kiln test fixture): bash-parsable subset, see tests/standin_sdk/README.md
EAPI=8
SLOT="0"
KEYWORDS="amd64 arm64"
IUSE=""
RDEPEND=""
