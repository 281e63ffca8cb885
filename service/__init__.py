"""The HTTP service (FastAPI). Build it with service.app.create_app()."""
