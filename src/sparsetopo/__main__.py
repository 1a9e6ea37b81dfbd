import sys

from sparsetopo.cli import main

sys.exit(main())
