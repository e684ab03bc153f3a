"""Development tools, apart from the SDK core: the contract server, ``serla dev`` and ``serla demo``.

Nothing here is imported by ``import serla`` or by a client: the ``serla`` command loads these modules
on demand, and tests import :class:`~serla.devtools.server.SerlaServer` directly.
"""
