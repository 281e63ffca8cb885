"""The HTTP service (FastAPI). Build it with densekit.service.app.create_app()."""
