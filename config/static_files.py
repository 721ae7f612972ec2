"""WhiteNoise without the thread hop on every request (issue 16).

WhiteNoise's middleware is sync-only: under ASGI, Django then runs it, and with it the rest of
the chain down to the view, through `sync_to_async`/`async_to_sync` on every request, static or
not: two thread switches before a streamed chat even starts. This subclass is async-capable:
a request for a static file is served as WhiteNoise serves it (its file lookup and response,
on a thread when autorefresh reads the disk), and every other request goes straight on.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None) -> None:
        super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> Any:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)
