"""`/ws/chat/`: chat over a WebSocket (see docs/api.md for every frame and close code)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken

from chat import runs, services
from chat.models import Conversation, Message
from chat.options import InvalidOptions, validate_options
from config.channel_layers import REJOIN_SECONDS, RedisChannelLayer, rejoin

logger = logging.getLogger(__name__)

AUTH_TIMEOUT_SECONDS = 5.0
CLOSE_UNAUTHENTICATED = 4401
CLOSE_AUTH_TIMEOUT = 4408
RESUME_WAIT_SECONDS = 10.0


class FrameError(Exception):
    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra


def _user_for_token(raw: str):
    """The active user of a valid access token and the token's expiry, or None."""
    try:
        token = AccessToken(raw)
    except TokenError:
        return None, None
    user = (
        get_user_model()
        .objects.filter(pk=token.get(jwt_settings.USER_ID_CLAIM), is_active=True)
        .first()
    )
    return user, token.get("exp")


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.user = None
        self.groups_joined: set[str] = set()
        self._timers: list[asyncio.Task] = []
        # Resume stitching: (conversation, message) -> next offset this socket must send.
        self._sent_upto: dict[tuple[str, int], int] = {}

        self._finished: set[tuple[str, int]] = set()
        self._heard_at: dict[tuple[str, int], float] = {}
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            self.user = user
        elif self._has_session_cookie() and self._bearer_header() is None:
            # A page whose session expired: tell it now rather than after the auth timeout.
            await self._refuse()
            return
        else:
            bearer = self._bearer_header()
            if bearer is not None:
                user, expires = await sync_to_async(_user_for_token)(bearer)
                if user is None:
                    await self._refuse()
                    return
                self.user = user
                self._close_at(expires)
        await self.accept()
        if self.user is None:
            self._timers.append(asyncio.create_task(self._require_auth_in_time()))
        if isinstance(self.channel_layer, RedisChannelLayer):
            self._timers.append(asyncio.create_task(self._keep_joined()))

    async def _refuse(self) -> None:
        # Accepted, then closed: a refused handshake reaches a browser as a bare 1006,
        # which cannot be told apart from a server that is down.
        await self.accept()
        await self.close(code=CLOSE_UNAUTHENTICATED)

    def _has_session_cookie(self) -> bool:
        return bool(self.scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME))

    def _bearer_header(self) -> str | None:
        for name, value in self.scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    return token.strip()
        return None

    async def _require_auth_in_time(self) -> None:
        await asyncio.sleep(AUTH_TIMEOUT_SECONDS)
        if self.user is None:
            await self.close(code=CLOSE_AUTH_TIMEOUT)

    def _close_at(self, expires: int | None) -> None:
        if not expires:
            return

        async def close_when_expired():
            await asyncio.sleep(max(0.0, expires - time.time()))
            await self.send_json(
                {
                    "type": "chat.error",
                    "code": "token_expired",
                    "detail": "The access token expired; reconnect with a new one.",
                }
            )
            await self.close(code=CLOSE_UNAUTHENTICATED)

        self._timers.append(asyncio.create_task(close_when_expired()))

    async def _keep_joined(self) -> None:
        # With Redis: join the groups again (a restarted Redis forgot them) and read back a
        # reply not heard of since (frames published meanwhile were lost).
        while True:
            await asyncio.sleep(REJOIN_SECONDS)
            try:
                await rejoin(self.channel_layer, self.channel_name, self.groups_joined)
                now = time.monotonic()
                for key in list(self._sent_upto):
                    if now - self._heard_at.get(key, now) >= REJOIN_SECONDS:
                        self._heard_at[key] = now
                        await self._catch_up(*key, announce=False)
            except Exception as exc:  # Redis or the database is away: next round
                logger.info("socket upkeep failed: %s", exc)

    async def disconnect(self, code: int) -> None:
        # The generations started from this socket go on: they are detached runs.
        for timer in self._timers:
            timer.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    # ------------------------------------------------------------------ frames in

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        try:
            return json.loads(text_data)
        except (json.JSONDecodeError, TypeError):
            return None

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if text_data is None:
            await self._error("invalid_frame", "Frames must be JSON text, not binary.")
            return
        if len(text_data) > settings.CHAT_MAX_MESSAGE_CHARS * 2 + 20_000:
            await self._error("invalid_frame", "The frame is too large.")
            return
        await self.receive_json(await self.decode_json(text_data))

    async def receive_json(self, content: Any, **kwargs) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self._error("invalid_frame", 'A frame is a JSON object with a "type".')
            return
        kind = content["type"]
        try:
            if kind == "auth":
                await self._auth(content)
            elif self.user is None:
                raise FrameError(
                    "auth_required", 'Authenticate first: {"type": "auth", "token": ...}.'
                )
            elif kind == "ping":
                await self.send_json({"type": "pong"})
            elif kind == "chat.send":
                await self._send(content)
            elif kind == "chat.stop":
                await self._stop(content)
            elif kind == "chat.resume":
                await self._resume(content)
            elif kind == "chat.subscribe":
                conversation = await self._own_conversation(content.get("conversation"))
                await self._join(str(conversation.pk))
            else:
                raise FrameError("unknown_type", f"Unknown frame type {kind[:40]!r}.")
        except FrameError as exc:
            await self._error(exc.code, exc.detail, **_about(content), **exc.extra)
        except services.ChatRequestError as exc:
            extra = {"retry_after": exc.retry_after} if exc.retry_after else {}
            await self._error(exc.code, exc.detail, **_about(content), **extra, **exc.extra)
        except Exception as exc:  # the socket stays open and the client hears why
            code, detail, _status, retry_after = services.failure_of(exc)
            logger.warning(
                "chat frame %r failed: %s", kind[:40], exc, exc_info=code == "internal_error"
            )
            extra = {"retry_after": retry_after} if retry_after else {}
            await self._error(code, detail, **_about(content), **extra)

    async def _error(self, code: str, detail: str, **extra: Any) -> None:
        await self.send_json({"type": "chat.error", "code": code, "detail": detail, **extra})

    async def _auth(self, content: dict) -> None:
        if self.user is not None:
            raise FrameError("invalid_frame", "Already authenticated.")
        token = content.get("token")
        user, expires = (None, None)
        if isinstance(token, str) and token:
            user, expires = await sync_to_async(_user_for_token)(token)
        if user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        self._close_at(expires)
        await self.send_json({"type": "auth.ok", "user": {"id": user.pk, "email": user.email}})

    async def _send(self, content: dict) -> None:
        message = content.get("message")
        if not isinstance(message, str):
            raise FrameError("invalid_frame", '"message" must be a string.')
        conversation = _optional_uuid(content.get("conversation"), "conversation")
        model = content.get("model")
        system = content.get("system")
        if model is not None and (not isinstance(model, str) or len(model) > 200):
            raise FrameError("invalid_frame", '"model" must be a model name.')
        if system is not None and not isinstance(system, str):
            raise FrameError("invalid_frame", '"system" must be a string.')
        attachments = content.get("attachments") or []
        if not isinstance(attachments, list) or len(attachments) > 10:
            raise FrameError("invalid_frame", '"attachments" must be a list of upload ids.')
        attachment_ids = [_optional_uuid(value, "attachments") for value in attachments]
        try:
            options = validate_options(content.get("options"))
        except InvalidOptions as exc:
            raise FrameError("invalid_options", str(exc), errors=exc.errors) from None

        plan = await services.prepare_chat(
            self.user.pk,
            services.ChatInput(
                message=message,
                conversation_id=conversation,
                model=model or None,
                system=system,
                options=options,
                attachments=[i for i in attachment_ids if i is not None],
            ),
        )
        await self._join(str(plan.conversation_pk))
        runs.start(plan)

    async def _stop(self, content: dict) -> None:
        conversation = await self._own_conversation(content.get("conversation"))
        await runs.cancel(str(conversation.pk))

    async def _resume(self, content: dict) -> None:
        conversation = await self._own_conversation(content.get("conversation"))
        message_id = content.get("message")
        offset = content.get("offset", 0)
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            raise FrameError("invalid_frame", '"message" must be a message id.')
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise FrameError("invalid_frame", '"offset" must be a non-negative integer.')
        conversation_id = str(conversation.pk)
        key = (conversation_id, message_id)
        # Join first, then read what is saved: any token published from now on reaches us,
        # and offsets let us drop what we already sent.
        self._sent_upto[key] = offset
        self._finished.discard(key)  # an explicit resume is always answered to the end
        await self._join(conversation_id)
        await self._catch_up(conversation_id, message_id)

    async def _catch_up(
        self, conversation_id: str, message_id: int, *, announce: bool = True
    ) -> None:
        key = (conversation_id, message_id)
        reply = await Message.objects.filter(
            pk=message_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT
        ).afirst()
        if reply is None:
            self._sent_upto.pop(key, None)
            raise FrameError("not_found", "Message not found.")
        if reply.status == Message.Status.STREAMING and announce:
            await self.send_json(
                {
                    "type": "chat.started",
                    "conversation": conversation_id,
                    "message": message_id,
                    "model": reply.model,
                }
            )
        await self._send_text(conversation_id, message_id, reply.content, 0)
        if reply.status == Message.Status.COMPLETE:
            await self._finish(
                {
                    "type": "chat.done",
                    "conversation": conversation_id,
                    "message": message_id,
                    "metrics": services.message_metrics(reply),
                }
            )
        elif reply.status == Message.Status.CANCELLED:
            await self._finish(
                {"type": "chat.cancelled", "conversation": conversation_id, "message": message_id}
            )
        elif reply.status in {Message.Status.FAILED, Message.Status.INTERRUPTED}:
            await self.chat_error(
                {
                    "type": "chat.error",
                    "code": reply.error_code or "interrupted",
                    "detail": reply.error or "The reply did not finish.",
                    "conversation": conversation_id,
                    "message": message_id,
                }
            )

    async def _own_conversation(self, value: Any) -> Conversation:
        conversation_id = _optional_uuid(value, "conversation")
        if conversation_id is None:
            raise FrameError("invalid_frame", '"conversation" is required.')
        conversation = await Conversation.objects.filter(
            pk=conversation_id, owner_id=self.user.pk
        ).afirst()
        if conversation is None:
            raise FrameError("not_found", "Conversation not found.")
        return conversation

    async def _join(self, conversation_id: str) -> None:
        group = runs.stream_group(conversation_id)
        if group not in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.add(group)

    # ------------------------------------------------------------------ frames out

    async def _send_text(self, conversation_id: str, message_id: int, text: str, offset: int):
        """Send `text` (which starts at `offset`), skipping what this socket already sent."""
        key = (conversation_id, message_id)
        if key in self._finished:
            return  # a late frame (Redis delivered it after a catch-up reported the end)
        self._heard_at[key] = time.monotonic()
        # A socket that missed chat.started (or joined mid-stream) still gets the whole text.
        sent = self._sent_upto.get(key, 0)
        end = offset + len(text)
        if end <= sent:
            return
        if offset > sent:
            # A gap: tokens published before this socket joined and not yet saved. They are
            # saved within CHAT_FLUSH_INTERVAL; read them back rather than skip them.
            text = await self._saved_text(message_id, sent, offset) + text
            offset = sent
        piece = text[sent - offset :]
        self._sent_upto[key] = end
        await self.send_json(
            {
                "type": "chat.token",
                "conversation": conversation_id,
                "message": message_id,
                "offset": sent,
                "content": piece,
            }
        )

    async def _saved_text(self, message_id: int, start: int, end: int) -> str:
        deadline = time.monotonic() + RESUME_WAIT_SECONDS
        while True:
            content = (
                await Message.objects.filter(pk=message_id)
                .values_list("content", flat=True)
                .afirst()
                or ""
            )
            if len(content) >= end or time.monotonic() > deadline:
                return content[start:end]
            await asyncio.sleep(settings.CHAT_FLUSH_INTERVAL / 2)

    async def dispatch(self, message: dict) -> None:
        # Channels closes stale database connections before every handler; for the token
        # frames, which never touch the database here, that would put each frame through
        # the database thread.
        if message.get("type") == "chat.token":
            await self.chat_token(message)
            return
        await super().dispatch(message)

    async def chat_token(self, event: dict) -> None:
        await self._send_text(
            event["conversation"], event["message"], event["content"], event["offset"]
        )

    async def chat_accepted(self, event: dict) -> None:
        await self.send_json(event)

    async def chat_queued(self, event: dict) -> None:
        await self.send_json(event)

    async def chat_started(self, event: dict) -> None:
        key = (event["conversation"], event["message"])
        if key in self._sent_upto or key in self._finished:
            return  # a resume already announced it, or the end is already reported
        self._sent_upto[key] = 0
        await self.send_json(event)

    async def chat_done(self, event: dict) -> None:
        await self._finish(event)

    async def chat_cancelled(self, event: dict) -> None:
        await self._finish(event)

    async def _finish(self, frame: dict) -> None:
        # A resume may already have reported the end that the live stream reports again.
        key = (frame["conversation"], frame.get("message"))
        if key in self._finished:
            return
        length = frame.get("length")
        if isinstance(length, int) and self._sent_upto.get(key, 0) < length:
            # Frames were lost on the way (a restarted Redis, a full channel): the reply is
            # saved before its end is published, so the rest is read back.
            await self._send_text(key[0], key[1], "", length)
        self._finished.add(key)
        self._sent_upto.pop(key, None)
        self._heard_at.pop(key, None)
        await self.send_json(frame)

    async def chat_error(self, event: dict) -> None:
        if event.get("message") is not None:
            # A reply's end, which a catch-up may have reported already.
            await self._finish(event)
        else:
            await self.send_json(event)


def _about(content: Any) -> dict[str, Any]:
    """The conversation a refused frame was about, so the client can place the error."""
    if isinstance(content, dict) and isinstance(content.get("conversation"), str):
        return {"conversation": content["conversation"][:64]}
    return {}


def _optional_uuid(value: Any, name: str) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(str(value))
    except ValueError:
        raise FrameError("invalid_frame", f'"{name}" must hold valid ids.') from None
