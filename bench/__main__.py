"""`python -m bench`: the same entry point as `python bench/run.py`."""

import sys

from bench.run import main

sys.exit(main())
