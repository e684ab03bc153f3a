"""The README's AWS Lambda example: a module-level client reused across warm invocations, flushed before
the handler returns (Lambda freezes the process as soon as it does).

Try it locally against ``serla dev``::

    SERLA_API_KEY=sk_live_dev python -c "import aws_lambda_handler as h; print(h.handler({'user_id': 'u1'}, None))"
"""

import os

from serla import Serla

# Module-level: reused across warm invocations.
serla = Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "http://127.0.0.1:8787"),
)


def handler(event, context):
    serla.track(
        event="lambda_invoked",
        distinct_id=event["user_id"],
        properties={"region": "us-east-1"},
    )
    # CRITICAL: Lambda freezes the execution context when the handler returns.
    # If you don't flush, events queued during this invocation sit in the
    # buffer until the next invocation (or are lost if the container is
    # recycled).
    serla.flush()
    return {"statusCode": 200}
