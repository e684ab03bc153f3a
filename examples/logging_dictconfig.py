"""An app configured only through ``logging.config.dictConfig``: log lines that name an event become events.

Usage::

    SERLA_API_KEY=sk_live_... SERLA_HOST=http://127.0.0.1:8787 python examples/logging_dictconfig.py

The ``serla`` handler is given no client, so it uses the process-wide default client, created from
``SERLA_API_KEY`` / ``SERLA_HOST`` at the first event (and shared with any
``serla.get_default_client().track(...)`` call in the app). Nothing is flushed by hand: the client's exit
hook and ``logging.shutdown()`` deliver what is queued when the script ends.

The one event this script sends arrives as::

    {"name": "order_placed", "distinctId": "user_123", "timestamp": "<when the line was logged, UTC>",
     "properties": {"message": "order ord_1001 placed", "level": "INFO", "logger": "shop.checkout",
                    "order_id": "ord_1001", "total": 42.5, "currency": "EUR", "items": 3}}
"""

import logging
import logging.config

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "serla": {
            "class": "serla.logging_handler.SerlaHandler",
            # Other ways to pick the client:
            #   "client": "ext://myapp.analytics.serla",       an existing serla.Serla instance
            #   "api_key": "sk_live_...", "host": "https://serla.dev",   a client of its own
            "flush_timeout": 5.0,
        },
    },
    # The root logger's default level is WARNING; events are usually logged at INFO.
    "root": {"level": "INFO", "handlers": ["console", "serla"]},
}


def main() -> None:
    logging.config.dictConfig(LOGGING)
    log = logging.getLogger("shop.checkout")

    log.info("checkout service started")  # an ordinary log line: printed, not an event
    log.warning("payment provider slow (%.1f s)", 2.5)  # still not an event

    log.info(
        "order %s placed",
        "ord_1001",
        extra={
            "event": "order_placed",  # names the event: only such records become events
            "distinct_id": "user_123",
            "order_id": "ord_1001",  # any other extra becomes a property
            "total": 42.5,
            "properties": {"currency": "EUR", "items": 3},  # merged into the properties too
        },
    )


if __name__ == "__main__":
    main()
