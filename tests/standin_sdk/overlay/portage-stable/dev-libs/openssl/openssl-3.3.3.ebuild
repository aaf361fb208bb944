# Stand-in ebuild (kiln test fixture): bash-parsable subset, see tests/standin_sdk/README.md
EAPI=8
SLOT="0/3"
KEYWORDS="amd64 arm64"
IUSE="+asm"
RDEPEND="sys-libs/glibc"
