"""The web console: server-rendered pages over the jobs and webhooks services, at /console."""

from app.console.routes import router

__all__ = ["router"]
