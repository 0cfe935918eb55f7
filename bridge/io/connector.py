"""The websocket side: connect to MLink, drive an MLinkSession, hand its events on.

This is the only module that imports `websockets`. Compression is off (MLink does not use it
and it costs CPU) and message sizes are capped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.errors import ConnectionLost
from bridge.mlink.framing import WireForm
from bridge.mlink.messages import MLinkLogon
from bridge.mlink.session import Event, MLinkSession, SessionLimits, Subscription


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    token: str | None = None  # apiKey or apiKey.password, sent as a Bearer header
    logon: MLinkLogon | None = None  # sent as MLinkLogon when there is no header token
    max_message: int = 1 << 20

    @property
    def form(self) -> WireForm:
        path = self.url.split("?", 1)[0].rstrip("/")
        return WireForm.FRAMED if path.endswith("/jsonf") else WireForm.JSON


async def session_events(
    endpoint: Endpoint, subscriptions: Sequence[Subscription], *, open_timeout: float = 10.0
) -> AsyncIterator[Event]:
    """One connection: yield the session's events until the connection ends.

    Raises ConnectionLost when the peer goes away (the caller decides whether to reconnect).
    """
    headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else None
    session = MLinkSession(
        subscriptions,
        form=endpoint.form,
        logon=endpoint.logon,
        header_auth=endpoint.token is not None,
        limits=SessionLimits(max_payload=endpoint.max_message),
    )
    ws: ClientConnection
    async with connect(
        endpoint.url,
        additional_headers=headers,
        compression=None,
        max_size=endpoint.max_message,
        open_timeout=open_timeout,
    ) as ws:
        for event in session.connected():
            yield event
        for request in session.data_to_send():
            await ws.send(request)
        try:
            async for payload in ws:
                for event in session.receive(payload):
                    yield event
                for outgoing in session.data_to_send():
                    await ws.send(outgoing)
        except ConnectionClosed as exc:
            raise ConnectionLost(f"MLink connection closed: {exc}") from None
        finally:
            session.connection_lost()
