# shellcheck shell=bash disable=SC2034  # sourced: its globals are for the scripts that source it
# Stand-in release_util.sh: the compression flags shared by build_packages,
# build_image and image_to_vm.sh (compress_disk_images lives in common.sh).
DEFAULT_IMAGE_COMPRESSION_FORMAT="bz2"

DEFINE_string image_compression_formats "${DEFAULT_IMAGE_COMPRESSION_FORMAT}" \
  "Compress the resulting images using thise formats. This option acceps a list of comma separated values. Options are: none, bz2, gz, zip, zst"
DEFINE_boolean only_store_compressed "${FLAGS_TRUE}" \
  "Delete input file when compressing, except when 'none' is part of the compression formats or the generic image is the input"
