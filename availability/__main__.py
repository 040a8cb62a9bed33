import sys

from availability.cli import main

sys.exit(main())
