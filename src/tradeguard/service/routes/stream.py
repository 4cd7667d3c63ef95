"""WS /v1/stream: assessments as they are computed. Auth by `Authorization` header or `?token=`."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from tradeguard.service.auth import ANONYMOUS

router = APIRouter(tags=["market"])


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket, pair: str | None = None) -> None:
    app = websocket.app
    header = websocket.headers.get("authorization", "")
    token = header.partition(" ")[2].strip() if header.lower().startswith("bearer ") else None
    token = token or websocket.query_params.get("token")
    principal = app.state.authenticator.resolve(token)
    if principal is None or (principal is ANONYMOUS and not app.state.settings.auth.anonymous_read):
        await websocket.close(code=4401, reason="a valid API key is required")
        return
    engine = app.state.engine
    await websocket.accept()
    queue = engine.broadcaster.subscribe()
    try:
        for state in engine.states.values():
            if state.latest is not None and pair in (None, state.pair):
                await websocket.send_json(engine.view(state.latest))
        while True:
            item = await queue.get()
            if pair is None or item.get("pair") == pair:
                await websocket.send_json(item)
    except WebSocketDisconnect:
        pass
    finally:
        engine.broadcaster.unsubscribe(queue)
        with contextlib.suppress(RuntimeError):
            await websocket.close()
