"""python -m trickbench.report: see cli.py."""

import sys

from trickbench.report.cli import main

sys.exit(main())
