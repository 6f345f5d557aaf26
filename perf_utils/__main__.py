import sys

from perf_utils.cli import main

sys.exit(main())
