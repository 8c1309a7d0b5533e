"""Websocket streaming: protocol v1, server, access checks, demo assets."""
