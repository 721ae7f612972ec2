"""Turns between users in one host's queue: start-time fair queueing, in whole numbers.

Each waiting request carries a *tag*, and the queue is served in order of (tag, arrival). A
user's first request takes the current virtual time ``V`` (the tag of the request served last);
each further one of theirs takes ``TURN // weight`` more. So a user who queues 20 requests holds
tags V, V+1 turn, V+2 turns, …, and a user arriving a moment later with one request gets tag V:
served before the first user's second. With weight 2 a user's requests are half a turn apart:
two turns for every one of a weight-1 user while both wait.

A user's ``next`` tag is remembered across their requests (one who has just been served waits
behind those who have not), but never banks credit: a user idle for a while starts at ``V``
like anyone. When a queued request leaves early (cancelled, or its holder died), the user's
remaining requests are tagged again from where they would have been, so leaving never costs
the user their place.

Tags are integers (``TURN`` is divisible by every weight up to ``MAX_WEIGHT``), so the Redis
gate's Lua script computes exactly the same order as this module: ties never depend on
floating-point rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_WEIGHT, MAX_WEIGHT = 1, 10
#: One turn at weight 1, in tag units: 2520 is the least common multiple of 1..10.
TURN = 2520


def step(weight: int) -> int:
    """The tag distance between two requests of a user of this weight."""
    return TURN // weight


def check_weight(weight: int) -> int:
    if not isinstance(weight, int) or not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise ValueError(f"weight must be an integer from {MIN_WEIGHT} to {MAX_WEIGHT}")
    return weight


@dataclass
class Turns:
    """The bookkeeping of one host's turns. ``fair=False`` serves in arrival order (FIFO)."""

    fair: bool = True
    vtime: int = 0
    #: The tag a user's next new request gets (at least ``vtime``).
    next_tag: dict[str, int] = field(default_factory=dict)
    #: The tag after the user's request served last: where their queued requests restart.
    served_next: dict[str, int] = field(default_factory=dict)

    def arrive(self, user: str, weight: int) -> int:
        """The tag of a new request."""
        if not self.fair:
            return 0
        tag = max(self.vtime, self.next_tag.get(user, 0))
        self.next_tag[user] = tag + step(weight)
        return tag

    def served(self, user: str, weight: int, tag: int) -> None:
        """A request got its slot (always the lowest tag waiting, or the only request)."""
        if not self.fair:
            return
        self.vtime = max(self.vtime, tag)
        self.served_next[user] = tag + step(weight)

    def retag(self, user: str, queued: list[tuple[int, int]]) -> list[int]:
        """New tags for ``user``'s requests still queued, given as (arrival, weight) in arrival
        order, after one of theirs left the queue early."""
        if not self.fair:
            return [0] * len(queued)
        tag = max(self.vtime, self.served_next.get(user, 0))
        tags = []
        for _arrival, weight in queued:
            tags.append(tag)
            tag += step(weight)
        self.next_tag[user] = tag
        return tags

    def forget_idle(self) -> None:
        """Drop users whose next tag is no later than ``vtime``: they would start there anyway.
        Called when the queue empties, so that the books hold only recent users."""
        self.next_tag = {u: t for u, t in self.next_tag.items() if t > self.vtime}
        self.served_next = {u: t for u, t in self.served_next.items() if t > self.vtime}
