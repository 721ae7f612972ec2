"""A conversation's messages as a tree (plain Python, no database).

Every message but the first has a parent; children of one parent are siblings, the versions of
one place in the conversation (a regenerated reply, an edited question), oldest first. A branch
is the path from the first message to a leaf. Message ids grow with time and a parent always
comes before its children, so sorting by id orders siblings and paths alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class Tree:
    def __init__(self, parents: Mapping[int, int | None]) -> None:
        self.parents = dict(parents)
        self.children: dict[int | None, list[int]] = {}
        for node in sorted(self.parents):
            self.children.setdefault(self.parents[node], []).append(node)

    @classmethod
    def of(cls, pairs: Iterable[tuple[int, int | None]]) -> Tree:
        """From (id, parent id) pairs."""
        return cls(dict(pairs))

    def __contains__(self, node: object) -> bool:
        return node in self.parents

    def path_to(self, node: int | None) -> list[int]:
        """The ids from the first message down to `node` (empty for None)."""
        path: list[int] = []
        while node is not None:
            path.append(node)
            node = self.parents[node]
        path.reverse()
        return path

    def siblings(self, node: int) -> list[int]:
        """The versions at `node`'s place, oldest first (`node` among them)."""
        return self.children.get(self.parents[node], [])

    def newest_leaf(self, node: int) -> int:
        """The leaf reached from `node` by always taking the newest child: the branch a user
        who picks `node` expects to see (what they last did there)."""
        while self.children.get(node):
            node = self.children[node][-1]
        return node
