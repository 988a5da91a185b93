"""spark-submit's Python file on EMR: `spark-submit ... spark_entry.py stream --source ...` is `fruits stream ...`."""

from cli.main import entry

entry()
