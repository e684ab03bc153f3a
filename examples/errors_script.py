"""A script with ``capture_exceptions=True``: an exception nobody catches is reported before the exit.

::

    serla dev &
    SERLA_API_KEY=sk_live_dev SERLA_RELEASE=2026.12.1 python examples/errors_script.py

The script fails on purpose. Python prints the traceback as usual (the previous ``sys.excepthook``
still runs), then the client flushes, so the report reaches the server before the process exits with
status 1. Handled errors are reported with ``capture_exception()`` and the loop goes on.
"""

import os

from serla import Serla

client = Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "http://127.0.0.1:8787"),
    capture_exceptions=True,
)


def parse_row(row: str) -> int:
    return int(row)


def main() -> None:
    total = 0
    for row in ["1", "2", "three", "4"]:
        try:
            total += parse_row(row)
        except ValueError:
            client.capture_exception(level="warning", context={"row": row})  # handled: reported, go on
    print("total", total)
    raise RuntimeError(f"the import stopped after {total}")  # uncaught: reported before the exit


if __name__ == "__main__":
    main()
