"""structlog on top of stdlib ``logging``, with ``SerlaHandler`` turning named events into Serla events.

Usage::

    SERLA_API_KEY=sk_live_... SERLA_HOST=http://127.0.0.1:8787 python examples/structlog_example.py [kwargs|formatter]

structlog hands records to ``logging`` in one of two ways, and the handler understands both:

* ``kwargs`` (the default): ``structlog.stdlib.render_to_log_kwargs`` makes structlog's ``event`` the log
  message and every other key an ``extra``.
* ``formatter``: ``structlog.stdlib.ProcessorFormatter.wrap_for_formatter`` passes the whole event dict as
  the record's message, to be rendered by a ``ProcessorFormatter`` on your console handler. The handler
  reads the dict's keys as fields and its ``event`` key as the message.

In structlog, ``event`` is the log message, so name the analytics event with ``event_name=`` (one of the
handler's default event keys). The user comes from structlog's context variables here
(``bind_contextvars(distinct_id=...)``); ``serla.distinct_id_context(...)`` works as well.
"""

import logging
import os
import sys
from typing import Any

import structlog

import serla
from serla.logging_handler import SerlaHandler


def configure(mode: str, client: serla.Serla) -> None:
    """Route structlog through stdlib logging, with a console handler and a SerlaHandler on the root."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    console = logging.StreamHandler()
    last: Any
    if mode == "kwargs":
        console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        last = structlog.stdlib.render_to_log_kwargs
    else:
        console.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.KeyValueRenderer(key_order=["event"]),
                ]
            )
        )
        last = structlog.stdlib.ProcessorFormatter.wrap_for_formatter
    root.addHandler(console)
    root.addHandler(SerlaHandler(client))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            last,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "kwargs"
    client = serla.Serla(os.environ["SERLA_API_KEY"], host=os.environ.get("SERLA_HOST", "https://serla.dev"))
    configure(mode, client)
    log = structlog.get_logger("shop.accounts")

    log.info("cache warmed", entries=1200)  # an ordinary log line: not an event

    structlog.contextvars.bind_contextvars(distinct_id="user_42")  # e.g. in request middleware
    try:
        log.info("user signed up", event_name="signup_completed", plan="pro", mode=mode)
    finally:
        structlog.contextvars.clear_contextvars()
    # At exit the client's hook and logging.shutdown() deliver what is queued.


if __name__ == "__main__":
    main()
