# Stand-in ebuild (kiln test fixture): bash-parsable subset, see tests/standin_sdk/README.md
# testing version: only visible with package.accept_keywords
EAPI=8
SLOT="0"
KEYWORDS="~amd64 ~arm64"
IUSE="+seccomp"
RDEPEND="sys-libs/glibc"
