"""kiln: the command line of the kiln.flatcar Ansible collection (see cli/README in the repository README)."""
