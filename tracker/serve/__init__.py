"""Websocket streaming: protocol v1 (``protocol``), the server (``server``, with ``options``,
``handshake``, ``encoder``, ``clients``, ``streams`` for a server of several, ``sink``, ``wslog``),
access checks (``access``), demo assets (``assets``)."""
