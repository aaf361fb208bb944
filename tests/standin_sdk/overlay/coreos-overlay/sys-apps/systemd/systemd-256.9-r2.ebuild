# Stand-in ebuild (kiln test fixture): bash-parsable subset, see tests/standin_sdk/README.md
EAPI=8
SLOT="0/2"
KEYWORDS="amd64 arm64"
IUSE="+seccomp selinux"
RDEPEND="sys-libs/glibc dev-libs/openssl:= selinux? ( sec-policy/selinux-base )"
