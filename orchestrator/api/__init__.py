"""The HTTP API (falcon, served by waitress). For now: the health endpoint that
`orchestrator up` serves; the REST resources come with the API itself."""

import json

import falcon

from .. import __version__


class Health:
    """GET /api/health: version, database, and whether the services are alive."""

    def __init__(self, status):
        self.status = status

    def on_get(self, req, resp):
        resp.text = json.dumps(dict(self.status(), version=__version__))
        resp.content_type = falcon.MEDIA_JSON


def create_app(status):
    """The WSGI app; `status()` returns the services' state as a dict."""
    app = falcon.App()
    app.add_route("/api/health", Health(status))
    return app
