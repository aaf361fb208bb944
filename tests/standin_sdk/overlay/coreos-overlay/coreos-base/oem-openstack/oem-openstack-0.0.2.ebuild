# Stand-in ebuild (kiln test fixture): bash-parsable subset, see tests/standin_sdk/README.md
# OEM metapackage (real: coreos-overlay/coreos-base/oem-openstack): build_packages builds it as a binary package
# (vendor build_packages:304-350), build_image oem_sysext installs it with build_sysext --metapkgs.
EAPI=8
DESCRIPTION="OEM suite for OpenStack"
SLOT="0"
KEYWORDS="amd64 arm64"
IUSE=""
SYSEXT_NAME="OpenStack"
