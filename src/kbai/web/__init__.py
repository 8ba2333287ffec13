"""Web: the FastAPI app factory, JSON API routes, HTML pages, sessions and CSRF."""
