import sys

from kiln_cli.main import entry

sys.exit(entry())
