"""Development tools, apart from the SDK core: the contract server, ``serla dev`` and ``serla demo``.

One module per concern:

* :mod:`~serla.devtools.server`: :class:`~serla.devtools.server.SerlaServer`, the HTTP plumbing, faults,
  and the routing table ``ROUTES`` (path -> endpoint; an endpoint module registers with one line);
* :mod:`~serla.devtools.wire`: paths, the recorded request, the response, the ``Endpoint`` of a route;
* :mod:`~serla.devtools.ingest`: the ``/events/batch``, ``/events`` and ``/identify`` routes;
* :mod:`~serla.devtools.validation`: what the real server's zod schemas and database accept, and exactly
  what it stores (JavaScript's reading of JSON, timestamps cut to milliseconds...);
* :mod:`~serla.devtools.limits`: projects, keys and scopes, plans, the per-minute limits and the quota;
* :mod:`~serla.devtools.store`: the in-memory and the SQLite stores;
* :mod:`~serla.devtools.dev`: ``serla dev`` (its page is ``static/``, shipped as package data);
* :mod:`~serla.devtools.demo`: ``serla demo``.

Nothing here is imported by ``import serla`` or by a client: the ``serla`` command loads these modules
on demand, and tests import :class:`~serla.devtools.server.SerlaServer` directly.
"""
