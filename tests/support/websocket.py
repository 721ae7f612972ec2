"""Channels' WebsocketCommunicator with waits fit for a loaded two-core CI machine."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

WAIT_SECONDS = 10.0


class Communicator(WebsocketCommunicator):
    """Channels waits 1 s by default for a frame: enough on a quiet laptop, a source of
    false failures when the suite shares the machine with Daphne and Celery processes.
    Only a failing test ever waits the whole time."""

    async def connect(self, timeout: float = WAIT_SECONDS):
        return await super().connect(timeout)

    async def receive_from(self, timeout: float = WAIT_SECONDS):
        return await super().receive_from(timeout)

    async def receive_json_from(self, timeout: float = WAIT_SECONDS):
        return await super().receive_json_from(timeout)

    async def receive_output(self, timeout: float = WAIT_SECONDS):
        return await super().receive_output(timeout)
