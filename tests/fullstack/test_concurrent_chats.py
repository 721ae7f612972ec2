"""200 concurrent WebSocket chats over both processes, and PostgreSQL's connections meanwhile.

100 sockets per process, a few users, each chat its own conversation. Every chat ends in
`chat.done` with exactly its own reply (assembled from its `chat.token` frames by offset), and
the test database never has more than 2 x DB_POOL_MAX_SIZE + 6 connections (two web processes'
pools, the worker, beat and the test's own), sampled from a thread during the run.

FULLSTACK_HEAVY=1 runs 300 chats instead (opt-in; not in CI).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pytest

from chat.models import Message
from tests.fullstack.clients import (
    Chat,
    WsClient,
    default_reply,
    end_mismatch,
    open_many,
    reply_id,
)
from tests.fullstack.harness import DB_POOL_MAX_SIZE, ConnectionSampler, database_name
from tests.support.live import ARTIFACTS

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]

CHATS = 300 if os.environ.get("FULLSTACK_HEAVY") == "1" else 200
USERS = 4
CONNECTION_LIMIT = 2 * DB_POOL_MAX_SIZE + 6
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


def message_for(index: int) -> str:
    """A distinct message; the double's reply echoes it (about 20 tokens in all)."""
    words = " ".join(WORDS[(index + k) % len(WORDS)] for k in range(8))
    return f"chat{index:03d} {words}"


def saved_replies(chats: list[Chat]) -> dict[str, int]:
    """How many of these chats' replies are saved with each status (or not at all)."""
    conversations = [
        f["conversation"] for c in chats for f in c.frames if f["type"] == "chat.accepted"
    ]
    statuses = Counter(
        Message.objects.filter(
            conversation_id__in=conversations, role=Message.Role.ASSISTANT
        ).values_list("status", flat=True)
    )
    statuses["no reply row"] = len(chats) - sum(statuses.values())
    return dict(statuses)


def first_token_seconds(chat: Chat) -> float | None:
    frames = chat.client.frames[chat.start :]
    for frame, at in zip(frames, chat.client.times[chat.start :], strict=True):
        if frame["type"] == "chat.token":
            return at - chat.sent_at
    return None


def report_figures(chats: list[Chat], timeline: dict[str, float], peak: int) -> None:
    """Printed and kept in artifacts/ for the record; never asserted (a loaded machine)."""
    firsts = sorted(s for c in chats if (s := first_token_seconds(c)) is not None)
    line = (
        f"{len(chats)} concurrent chats: all ended after {timeline.get('all ended after')} s; "
        f"first token after send p50 {firsts[len(firsts) // 2]:.3f} s, "
        f"p95 {firsts[int(len(firsts) * 0.95)]:.3f} s (the double waits 0.02 s per token; "
        f"the gate admits 64 at a time); PostgreSQL connections at the peak: {peak} "
        f"(bound {CONNECTION_LIMIT})"
        if firsts
        else f"{len(chats)} concurrent chats: no token arrived"
    )
    print("\n" + line)
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "fullstack-figures.txt").open("a") as figures:
        figures.write(line + "\n")


@pytest.mark.timeout(300)
def test_concurrent_chats_over_both_processes(stack, double, make_users, headers):
    double.configure(token_delay=0.02)
    users = make_users(USERS, prefix="load")
    chats: list[Chat] = []
    timeline: dict[str, float] = {}

    async def scenario() -> None:
        clients = [
            WsClient(
                stack.daphnes[i % 2].ws_url,
                headers(users[i % USERS]),
                f"chat{i:03d}@daphne{i % 2 + 1}",
            )
            for i in range(CHATS)
        ]
        await open_many(clients)
        try:
            chats.extend(
                Chat(client, message_for(i), default_reply(message_for(i)))
                for i, client in enumerate(clients)
            )
            t0 = time.monotonic()
            await asyncio.gather(*(chat.send() for chat in chats))
            await asyncio.gather(
                *(chat.terminal(timeout=60) for chat in chats), return_exceptions=True
            )
            timeline["all ended after"] = round(time.monotonic() - t0, 1)
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    with ConnectionSampler(database_name()) as sampler:
        asyncio.run(scenario())

    findings: list[str] = []
    not_done = [c for c in chats if not any(f["type"] == "chat.done" for f in c.frames)]
    if not_done:
        findings.append(
            f"{len(not_done)}/{CHATS} chats did not end in chat.done "
            f"(their replies, as saved: {saved_replies(not_done)}):\n  "
            + "\n  ".join(c.describe() for c in not_done[:8])
        )
    wrong: list[str] = []
    for chat in chats:
        if chat in not_done:
            continue
        text, problems = chat.text()
        assert chat.expected is not None  # every chat here knows its reply
        if problems or text != chat.expected:
            wrong.append(
                f"{chat.client.name}: {problems or 'wrong text'}; {len(text)} chars of "
                f"{len(chat.expected)}, ends {text[-30:]!r}; {chat.describe()[-200:]}"
            )
    if wrong:
        findings.append(
            f"{len(wrong)} completed replies differ from the script:\n  " + "\n  ".join(wrong[:8])
        )
    rows = Message.objects.in_bulk([reply_id(c.frames) or 0 for c in chats])
    disagree = [
        f"{chat.client.name}: {problem}"
        for chat in chats
        if chat not in not_done
        and (problem := end_mismatch(chat.frames, rows.get(reply_id(chat.frames) or 0)))
    ]
    if disagree:
        findings.append(
            f"{len(disagree)} chats disagree with their saved reply:\n  "
            + "\n  ".join(disagree[:8])
        )
    if sampler.error is not None or not sampler.samples:
        findings.append(f"pg_stat_activity was not sampled: {sampler.error!r}")
    elif sampler.peak > CONNECTION_LIMIT:
        findings.append(
            f"{sampler.peak} connections to {database_name()} at the peak "
            f"(limit 2 x {DB_POOL_MAX_SIZE} + 6 = {CONNECTION_LIMIT})"
        )
    counts = [n for _, n in sampler.samples]
    report_figures(chats, timeline, sampler.peak)
    assert not findings, "\n".join(findings) + (
        f"\n(timeline {timeline}; connections: peak {sampler.peak}, "
        f"{len(counts)} samples, every 10th: {counts[::10][:60]})"
    )
