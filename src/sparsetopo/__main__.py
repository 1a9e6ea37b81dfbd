import sys

from sparsetopo.cli import entry

sys.exit(entry())
