"""spark-submit's Python file on EMR: `spark-submit ... spark_entry.py stream --source ...` is `fruits stream ...`."""

import sys

from cli.main import main

sys.exit(main())
