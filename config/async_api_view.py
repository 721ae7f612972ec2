"""DRF's APIView with coroutine handlers: the chat endpoints without a thread per request.

Under ASGI Django runs a sync view on a thread of the request's own (asgiref's thread-sensitive
executor), and the chat views went back to the event loop (`async_to_sync`) for the services,
which hop again to the database threads: a CPU cost per message that the WebSocket path does
not pay (issue 16). Here the view is a coroutine function and a request makes one hop to a
thread for DRF's sync part, whatever the outcome:

- `initial()` (content negotiation, authentication, which reads the user row, permissions,
  throttles), then the handler's `read_<method>()` (the body parsed and validated), all on one
  database thread via `config.database.run`; a refusal there is answered in the same hop by
  `handle_exception()`, as DRF's `dispatch` would;
- the handler itself, `async def post(self, request, read, *args, **kwargs)`, on the loop,
  `read` being what `read_post` returned;
- an error of the handler is answered by `handle_exception()` in one hop, `finalize_response()`
  runs on the loop (it only sets attributes and headers), and Django renders a `Response` as
  it renders any DRF response. Status, body and headers are DRF's.

Why `config.database.run` and not Django's `sync_to_async`: under Daphne it runs on the bounded
database threads the generations use, whose connections go back to the pool after each call
(`release_connections`) and whose SQLite connection lives on, rather than on a thread made for
this request, which opened a connection for it every time. Under `async_to_sync` (Django's test
client, or a sync caller) it runs on the waiting thread, which holds the test's transaction.

Methods without a coroutine handler (OPTIONS, the 405 of the others) go through DRF's own
`dispatch` on the request's thread, exactly as a sync APIView.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from rest_framework.request import Request
from rest_framework.views import APIView

from config import database


class AsyncAPIView(APIView):
    """An APIView whose coroutine handlers run on the event loop (see the module's doc)."""

    async def dispatch(  # type: ignore[override]  # a coroutine: Django awaits the view
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        method = (request.method or "").lower()
        handler = getattr(self, method, None) if method in self.http_method_names else None
        if handler is None or not iscoroutinefunction(handler):
            sync_dispatch = super().dispatch
            return await sync_to_async(sync_dispatch, thread_sensitive=True)(
                request, *args, **kwargs
            )
        self.args = args
        self.kwargs = kwargs
        drf_request = self.initialize_request(request, *args, **kwargs)
        self.request = drf_request
        self.headers = self.default_response_headers
        admitted, outcome = await database.run(self._admit, drf_request, method, args, kwargs)
        if admitted:
            try:
                response = await handler(drf_request, outcome, *args, **kwargs)
            except Exception as exc:
                response = await database.run(self.handle_exception, exc)
        else:
            response = outcome
        self.response = self.finalize_response(drf_request, response, *args, **kwargs)
        return self.response

    def _admit(
        self, request: Request, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[bool, Any]:
        """(True, what `read_<method>` returned), or (False, the error response)."""
        try:
            self.initial(request, *args, **kwargs)
            read = getattr(self, f"read_{method}", None)
            return True, (read(request, *args, **kwargs) if read is not None else None)
        except Exception as exc:
            return False, self.handle_exception(exc)
