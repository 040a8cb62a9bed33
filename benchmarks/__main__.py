"""``python -m benchmarks <scenario> [--smoke]``: see benchmarks/cli.py."""

import sys

from benchmarks.cli import main

sys.exit(main())
