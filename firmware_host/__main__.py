"""`python -m firmware_host` is `estim`."""

from .cli import main

raise SystemExit(main())
