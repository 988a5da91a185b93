"""`python -m cli ...` is `fruits ...`."""

import sys

from cli.main import main

sys.exit(main())
