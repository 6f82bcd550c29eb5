"""`python -m caseflow.cli`: the command line (the `caseflow` command)."""

import sys

from . import main

sys.exit(main())
