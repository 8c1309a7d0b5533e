"""Websocket streaming: protocol v1 (``protocol``), the server (``server``, with ``options``,
``handshake``, ``encoder``, ``clients``), access checks (``access``), demo assets (``assets``)."""
