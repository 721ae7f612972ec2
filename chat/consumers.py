"""`/ws/chat/`: chat over a WebSocket (see docs/api.md for every frame and close code)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from uuid import UUID

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from accounts import sockets
from accounts.authentication import scope_refusal
from chat import abandon, protocol, runs, selectors
from chat.models import Conversation, Message
from chat.protocol import FrameError, invalid_frame
from config.channel_layers import REJOIN_SECONDS, RedisChannelLayer, rejoin
from config.exceptions import app_error_of
from config.metrics import CountedSocket
from core import fastjson
from core.errors import AppError

logger = logging.getLogger(__name__)

AUTH_TIMEOUT_SECONDS = 5.0
RESUME_WAIT_SECONDS = 10.0

#: The frames that act for the user: each checks first that the socket's session or token
#: still holds (accounts.sockets.still_valid). Token frames going out never query anything.
ACTION_FRAMES = frozenset(
    {"chat.send", "chat.stop", "chat.resume", "chat.subscribe", *protocol.ACTIONS}
)
#: The frames that chat: an API key of scope `read` is refused them (`insufficient_scope`);
#: it may still resume, subscribe and ping.
CHAT_FRAMES = frozenset({"chat.send", "chat.stop", *protocol.ACTIONS})


class ChatConsumer(CountedSocket, AsyncJsonWebsocketConsumer):
    metrics_endpoint = "chat"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Frames of this process's runs come straight from them (chat.runs.follow), into an
        # inbox read in order; every handler, whichever way its message came, runs alone.
        self._handling = asyncio.Lock()
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._courier: asyncio.Task | None = None
        self._followed_here: set[str] = set()

    async def connect(self) -> None:
        self.user = None
        self.credential: sockets.Credential | None = None
        self.ended = False  # the session ended: closing, nothing more is acted on
        self.groups_joined: set[str] = set()
        self._timers: list[asyncio.Task] = []
        # Resume stitching: (conversation, message) -> next offset this socket must send.
        self._sent_upto: dict[tuple[str, int], int] = {}

        # Replies whose end this socket reported -> their length then (a continuation starts
        # at that length or beyond; anything else about them is a late duplicate).
        self._finished: dict[tuple[str, int], int] = {}
        self._heard_at: dict[tuple[str, int], float] = {}
        # Conversations whose reply this socket follows (CHAT_CANCEL_ABANDONED: their leases
        # are renewed while it does; see chat.abandon).
        self._following: set[str] = set()
        self._touches: set[asyncio.Task] = set()
        shake = await sockets.handshake(self.scope)
        if shake.refused:
            await self._refuse()
            return
        await self.accept()
        if shake.user is not None:
            await self._authenticated(shake.user, shake.credential)
        if self.user is None:
            self._timers.append(asyncio.create_task(self._require_auth_in_time()))
        if isinstance(self.channel_layer, RedisChannelLayer):
            self._timers.append(asyncio.create_task(self._keep_joined()))
        if abandon.enabled():
            self._timers.append(asyncio.create_task(self._keep_following()))

    async def _refuse(self) -> None:
        # Accepted, then closed: a refused handshake reaches a browser as a bare 1006,
        # which cannot be told apart from a server that is down.
        await self.accept()
        await self.close(code=sockets.CLOSE_UNAUTHENTICATED)

    async def _require_auth_in_time(self) -> None:
        await asyncio.sleep(AUTH_TIMEOUT_SECONDS)
        if self.user is None:
            await self.close(code=sockets.CLOSE_AUTH_TIMEOUT)

    async def _authenticated(self, user: Any, credential: sockets.Credential | None) -> None:
        self.user = user
        self.credential = credential
        self._close_at(credential.expires if credential is not None else None)
        # Told when the account changes (logout, new password, deactivation): see
        # account_changed(). With Redis, _keep_joined() joins it again like the others.
        group = sockets.user_group(int(user.pk))
        self.groups_joined.add(group)
        try:
            await self.channel_layer.group_add(group, self.channel_name)
        except Exception as exc:  # Redis away: _keep_joined() joins it when it is back
            logger.info("socket could not join %s yet: %s", group, exc)

    async def _session_ended(self, **about: Any) -> None:
        self.ended = True
        await self.send_json(protocol.session_ended(**about))
        await self.close(code=sockets.CLOSE_UNAUTHENTICATED)

    async def account_changed(self, event: dict) -> None:
        if not self.ended and await sockets.ended_by(self.credential, event):
            await self._session_ended()

    def _close_at(self, expires: int | None) -> None:
        if not expires:
            return

        async def close_when_expired():
            await asyncio.sleep(max(0.0, expires - time.time()))
            await self.send_json(protocol.token_expired())
            await self.close(code=sockets.CLOSE_UNAUTHENTICATED)

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

    def _follow(self, conversation_id: str) -> None:
        """This socket follows the reply of a conversation (chat.abandon)."""
        if abandon.enabled() and conversation_id not in self._following:
            self._following.add(conversation_id)
            touch = asyncio.create_task(abandon.atouch([conversation_id]))
            self._touches.add(touch)
            touch.add_done_callback(self._touches.discard)

    async def _keep_following(self) -> None:
        while True:
            await asyncio.sleep(abandon.TOUCH_SECONDS)
            await abandon.atouch(self._following)

    async def disconnect(self, code: int) -> None:
        # The generations started from this socket go on: they are detached runs.
        for conversation_id in self._followed_here:
            runs.unfollow(conversation_id, self)
        if self._courier is not None:
            self._courier.cancel()
        for timer in self._timers:
            timer.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    # ------------------------------------------------------------------ frames in

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        # core.safejson: a frame nested too deep or with a huge number is an invalid frame
        # (None: receive_json answers `invalid_frame`), not a RecursionError closing with 1011.
        from core import safejson

        try:
            return safejson.loads(text_data)
        except (ValueError, TypeError):
            return None

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        # Every frame out, tokens included: orjson (issue 16's cost per relayed token).
        return fastjson.dumps_text(content)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if self.ended:
            return
        if text_data is None:
            await self._error(invalid_frame("Frames must be JSON text, not binary."))
            return
        if len(text_data) > settings.CHAT_MAX_MESSAGE_CHARS * 2 + 20_000:
            await self._error(invalid_frame("The frame is too large."))
            return
        await self.receive_json(await self.decode_json(text_data))

    async def receive_json(self, content: Any, **kwargs) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self._error(invalid_frame('A frame is a JSON object with a "type".'))
            return
        kind = content["type"]
        try:
            if kind == "auth":
                await self._auth(content)
            elif self.user is None:
                raise FrameError(
                    "auth_required", 'Authenticate first: {"type": "auth", "token": ...}.', 401
                )
            elif kind in ACTION_FRAMES and not await sockets.still_valid(self.credential):
                await self._session_ended(**_about(content))
            elif kind in CHAT_FRAMES and (refusal := scope_refusal(self.credential, "chat")):
                raise refusal  # chat.error `insufficient_scope`
            elif kind == "ping":
                await self.send_json(protocol.PONG)
            elif kind == "chat.send":
                await self._send(content)
            elif kind in protocol.ACTIONS:
                action = protocol.parse_action(content)
                await runs.start_action(self._user_id(), action, self._join_following)
            elif kind == "chat.stop":
                await self._stop(content)
            elif kind == "chat.resume":
                await self._resume(content)
            elif kind == "chat.subscribe":
                conversation = await self._own_conversation(content.get("conversation"))
                await self._join(str(conversation.pk))
            else:
                raise FrameError("unknown_type", f"Unknown frame type {kind[:40]!r}.", 400)
        except Exception as exc:  # the socket stays open and the client hears why
            error = app_error_of(exc)
            if not isinstance(exc, AppError):
                logger.warning(
                    "chat frame %r failed: %s",
                    kind[:40],
                    exc,
                    exc_info=error.code == "internal_error",
                )
            await self._error(error, **_about(content))

    async def _error(self, error: AppError, **about: Any) -> None:
        await self.send_json(protocol.error_frame(error, **about))

    async def _auth(self, content: dict) -> None:
        if self.user is not None:
            raise invalid_frame("Already authenticated.")
        user, credential = await sockets.user_for_token(content.get("token"), self.scope)
        if user is None:
            await self.close(code=sockets.CLOSE_UNAUTHENTICATED)
            return
        await self._authenticated(user, credential)
        await self.send_json(protocol.auth_ok(user))

    async def _send(self, content: dict) -> None:
        await runs.start_chat(self._user_id(), protocol.parse_send(content), self._join_following)

    async def _stop(self, content: dict) -> None:
        conversation = await self._own_conversation(content.get("conversation"))
        await runs.cancel(str(conversation.pk))

    async def _resume(self, content: dict) -> None:
        conversation = await self._own_conversation(content.get("conversation"))
        message_id = content.get("message")
        offset = content.get("offset", 0)
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            raise invalid_frame('"message" must be a message id.')
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise invalid_frame('"offset" must be a non-negative integer.')
        conversation_id = str(conversation.pk)
        key = (conversation_id, message_id)
        # Join first, then read what is saved: any token published from now on reaches us,
        # and offsets let us drop what we already sent.
        self._sent_upto[key] = offset
        self._finished.pop(key, None)  # an explicit resume is always answered to the end
        await self._join_following(conversation_id)
        await self._catch_up(conversation_id, message_id)

    async def _catch_up(
        self, conversation_id: str, message_id: int, *, announce: bool = True
    ) -> None:
        key = (conversation_id, message_id)
        try:
            reply = await selectors.reply_to_resume(conversation_id, message_id)
        except AppError:
            self._sent_upto.pop(key, None)
            raise
        if reply.status == Message.Status.STREAMING and announce:
            await self.send_json(protocol.started_frame(conversation_id, message_id, reply.model))
        await self._send_text(conversation_id, message_id, reply.content, 0)
        end = protocol.saved_end_frame(conversation_id, reply)
        if end is not None:
            await self._finish(end)

    async def _own_conversation(self, value: Any) -> Conversation:
        if value is None:
            raise invalid_frame('"conversation" is required.')
        try:
            conversation_id = UUID(str(value))
        except ValueError:
            raise invalid_frame('"conversation" must hold valid ids.') from None
        return await selectors.aown_conversation(self._user_id(), conversation_id)

    def _user_id(self) -> int:
        assert self.user is not None  # receive_json() lets only authenticated frames here
        return int(self.user.pk)

    async def _join_following(self, conversation_id: str) -> None:
        """Join a conversation whose reply is starting or being resumed."""
        self._follow(conversation_id)
        await self._join(conversation_id)

    async def _join(self, conversation_id: str) -> None:
        group = runs.stream_group(conversation_id)
        if group not in self.groups_joined:
            if conversation_id not in self._followed_here:
                self._followed_here.add(conversation_id)
                runs.follow(conversation_id, self)  # first: see chat.runs.follow
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.add(group)

    def deliver(self, frame: dict[str, Any]) -> None:
        """A frame of a run of this process (chat.runs): handled in order, after whatever
        this socket is handling now; the run never waits for it."""
        self._inbox.put_nowait(frame)
        if self._courier is None:
            self._courier = asyncio.get_running_loop().create_task(self._carry())

    async def _carry(self) -> None:
        while True:
            frame = await self._inbox.get()
            try:
                async with self._handling:
                    await self._handle(frame)
            except Exception:  # one frame that fails must not silence the socket
                logger.exception("chat frame %r failed", frame.get("type"))

    # ------------------------------------------------------------------ frames out

    async def _send_text(self, conversation_id: str, message_id: int, text: str, offset: int):
        """Send `text` (which starts at `offset`), skipping what this socket already sent."""
        key = (conversation_id, message_id)
        if key in self._finished:
            return  # a late frame (Redis delivered it after a catch-up reported the end)
        self._follow(conversation_id)
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
        await self.send_json(protocol.token_frame(conversation_id, message_id, sent, piece))

    async def _saved_text(self, message_id: int, start: int, end: int) -> str:
        deadline = time.monotonic() + RESUME_WAIT_SECONDS
        while True:
            content = await selectors.saved_text(message_id)
            if len(content) >= end or time.monotonic() > deadline:
                return content[start:end]
            await asyncio.sleep(settings.CHAT_FLUSH_INTERVAL / 2)

    async def dispatch(self, message: dict) -> None:
        async with self._handling:
            await self._handle(message)

    async def _handle(self, message: dict) -> None:
        # Not channels' dispatch: it closes stale database connections before every handler,
        # a thread hop per frame (and, with CONN_MAX_AGE 0, a new SQLite connection for the
        # next credential check). This socket's queries all go through config.database,
        # whose threads hand their connections back after each call (issue 16).
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message.get('type')!r}")
        await handler(message)

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
        offset = int(event.get("offset") or 0)
        if key in self._finished and offset > 0 and offset >= self._finished[key]:
            del self._finished[key]  # a continuation of a reply that had ended
        if key in self._sent_upto or key in self._finished:
            return  # a resume already announced it, or the end is already reported
        self._sent_upto[key] = offset
        await self.send_json(event)

    async def chat_done(self, event: dict) -> None:
        await self._finish(event)

    async def chat_cancelled(self, event: dict) -> None:
        await self._finish(event)

    async def _finish(self, frame: dict) -> None:
        # A resume may already have reported the end that the live stream reports again.
        if frame.get("message") is None:  # refused before its reply existed
            self._following.discard(str(frame.get("conversation")))
            await self.send_json(frame)
            return
        key = (str(frame["conversation"]), int(frame["message"]))
        if key in self._finished:
            return
        length = frame.get("length")
        if isinstance(length, int) and self._sent_upto.get(key, 0) < length:
            # Frames were lost on the way (a restarted Redis, a full channel): the reply is
            # saved before its end is published, so the rest is read back.
            await self._send_text(key[0], key[1], "", length)
        self._finished[key] = length if isinstance(length, int) else self._sent_upto.get(key, 0)
        self._following.discard(key[0])
        self._sent_upto.pop(key, None)
        self._heard_at.pop(key, None)
        await self.send_json(frame)

    async def chat_error(self, event: dict) -> None:
        await self._finish(event)  # a reply's end, which a catch-up may have reported already


def _about(content: Any) -> dict[str, Any]:
    """The conversation a refused frame was about, so the client can place the error."""
    if isinstance(content, dict) and isinstance(content.get("conversation"), str):
        return {"conversation": content["conversation"][:64]}
    return {}
