"""The web service: FastAPI app (app.py), request micro-batching (batching.py) and a static page."""

from clipforge.apps.serve.app import ServeLimits, create_app

__all__ = ["ServeLimits", "create_app"]
