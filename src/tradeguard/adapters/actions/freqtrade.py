"""Trip action that pauses a Freqtrade bot through its REST API.

Freqtrade serves its API under ``/api/v1``. ``POST /api/v1/token/login`` with HTTP basic auth answers
``{"access_token", "refresh_token"}``; the access token (a JWT, valid 15 minutes) then goes in
``Authorization: Bearer``. ``POST /api/v1/stopentry`` stops new entries and keeps managing open trades
(older versions only know its former name ``/api/v1/stopbuy``, tried on a 404); ``POST /api/v1/stop``
stops the bot. Both answer ``{"status": "..."}``.

The access token is kept between trips; a 401 (expired token, restarted bot) logs in again once. Timeouts,
connection errors, 429 and 5xx raise a retryable :class:`ActionError`; rejected credentials and other 4xx
answers raise a non-retryable one.
"""

from __future__ import annotations

from typing import Literal

import httpx

from tradeguard.adapters.actions.base import ActionError, ActionOutcome, TripContext
from tradeguard.adapters.sources.http import USER_AGENT, one_line
from tradeguard.errors import InputError

Mode = Literal["stopentry", "stop"]

API = "/api/v1"
LOGIN_PATH = f"{API}/token/login"
PATHS: dict[str, tuple[str, ...]] = {
    "stopentry": (f"{API}/stopentry", f"{API}/stopbuy"),
    "stop": (f"{API}/stop",),
}


class PauseFreqtrade:
    """Stop new entries (``mode="stopentry"``) or stop the bot (``mode="stop"``) of one Freqtrade instance."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        mode: Mode = "stopentry",
        timeout_s: float = 5.0,
        name: str | None = None,
    ) -> None:
        if mode not in PATHS:
            raise InputError(f"unknown Freqtrade pause mode {mode!r}; choose one of {', '.join(PATHS)}")
        url = httpx.URL(base_url.rstrip("/").removesuffix(API))
        if url.scheme not in ("http", "https") or not url.host:
            raise InputError(f"invalid Freqtrade API URL {base_url!r}: expected e.g. http://127.0.0.1:8080")
        if timeout_s <= 0:
            raise InputError(f"timeout_s must be positive, got {timeout_s}")
        self.base_url = str(url.copy_with(username=None, password=None))
        self.mode: Mode = mode
        self.timeout_s = timeout_s
        self._auth = httpx.BasicAuth(username, password)
        self._name = name or f"freqtrade_{mode}:{url.host}" + (f":{url.port}" if url.port else "")
        self._paths = PATHS[mode]
        self._token: str | None = None

    @property
    def name(self) -> str:
        return self._name

    async def run(self, trip: TripContext) -> ActionOutcome:
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout_s, headers={"User-Agent": USER_AGENT}
        ) as client:
            paths, used = self._paths, 0
            response = await self._post_authorized(client, paths[0])
            while response.status_code == httpx.codes.NOT_FOUND and used + 1 < len(paths):
                used += 1  # an older Freqtrade: try the endpoint's former name
                response = await self._post_authorized(client, paths[used])
            tried = f" (after a 404 on {', '.join(paths[:used])})" if used else ""
            _raise_for_status(response, f"{self.name}: POST {paths[used]}{tried}")
            self._paths = paths[used:]  # remember the name that worked
            return ActionOutcome(
                self.name, True, detail=f"{self.mode} via POST {paths[used]}: {_status(response)}"
            )

    async def _post_authorized(self, client: httpx.AsyncClient, path: str) -> httpx.Response:
        """POST with the bearer token, logging in first when there is none and again once on a 401."""
        fresh = self._token is None
        if self._token is None:
            self._token = await self._login(client)
        response = await self._send(client, path, self._token)
        if response.status_code == httpx.codes.UNAUTHORIZED and not fresh:
            self._token = await self._login(client)
            response = await self._send(client, path, self._token)
        if response.status_code == httpx.codes.UNAUTHORIZED:
            self._token = None
            raise ActionError(
                f"{self.name}: POST {path} refused a freshly issued token: {_describe(response)}",
                retryable=False,
            )
        return response

    async def _login(self, client: httpx.AsyncClient) -> str:
        response = await self._send(client, LOGIN_PATH, None, auth=self._auth)
        if response.status_code == httpx.codes.UNAUTHORIZED:
            raise ActionError(
                f"{self.name}: login rejected; check the API username and password", retryable=False
            )
        _raise_for_status(response, f"{self.name}: POST {LOGIN_PATH}")
        try:
            token = response.json()["access_token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ActionError(
                f"{self.name}: login answered without an access_token: {_describe(response)}", retryable=False
            ) from exc
        if not isinstance(token, str) or not token:
            raise ActionError(f"{self.name}: login answered an empty access_token", retryable=False)
        return token

    async def _send(
        self, client: httpx.AsyncClient, path: str, token: str | None, *, auth: httpx.Auth | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            return await client.post(path, headers=headers, auth=auth)
        except httpx.TimeoutException as exc:
            raise ActionError(f"{self.name}: POST {path} timed out after {self.timeout_s:g}s") from exc
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {one_line(str(exc))}"
            raise ActionError(f"{self.name}: POST {path} failed ({detail})") from exc


def _raise_for_status(response: httpx.Response, what: str) -> None:
    """Nothing for 2xx; a retryable ActionError for 408, 429 and 5xx; a permanent one otherwise."""
    code = response.status_code
    if response.is_success:
        return
    retryable = code in (httpx.codes.REQUEST_TIMEOUT, httpx.codes.TOO_MANY_REQUESTS) or code >= 500
    raise ActionError(f"{what}: {_describe(response)}", retryable=retryable)


def _describe(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {one_line(response.text)}".rstrip()


def _status(response: httpx.Response) -> str:
    """Freqtrade's ``{"status": "..."}`` message, or the body as text."""
    try:
        body = response.json()
    except ValueError:
        return one_line(response.text)
    return one_line(str(body.get("status", body) if isinstance(body, dict) else body))
