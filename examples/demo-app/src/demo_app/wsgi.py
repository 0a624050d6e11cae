"""WSGI entry point: gunicorn demo_app.wsgi:app"""

from demo_app.web import app

__all__ = ["app"]
