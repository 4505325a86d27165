"""The HTTP layer: the connection guard around uvicorn, the ASGI app, the ingest and /metrics
endpoints, the Flask app, bearer tokens. May import core, stats and metrics; never demo."""
