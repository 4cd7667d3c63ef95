"""The HTTP + WebSocket service: FastAPI app, settings, scheduler, auth, metrics."""
