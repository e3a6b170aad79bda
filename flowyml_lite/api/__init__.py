"""The HTTP API and dashboard (standard library ``http.server``); ``flowyml-lite serve`` runs it.

>>> from flowyml_lite.api import ApiServer   # ApiServer(scheduler, host, port, token=...).start()
"""

from .app import ApiApp, Request, Response, routes
from .server import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, ApiServer, is_loopback

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "TOKEN_ENV",
    "ApiApp",
    "ApiServer",
    "Request",
    "Response",
    "is_loopback",
    "routes",
]
