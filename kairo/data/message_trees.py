"""OpenAssistant's message trees (oasst1, oasst2): one message a row, linked by `parent_id`, walked into conversations.

A tree becomes one conversation: its first prompt, then at every turn the reply reviewers ranked best (`rank` 0;
unranked replies after ranked ones, then in file order), as OpenAssistant's own `oasst_top1` export does,
up to its last answer. Branches not taken are alternatives, not training rows; deleted messages and their
replies are left out.
Unlike other shapes this holds a file's messages in memory until its trees are complete.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kairo.data.datafiles import InvalidLine

COLUMNS = ("message_id", "parent_id", "role", "text")


def is_message_tree(columns: Sequence[str]) -> bool:
    """Whether a file's columns are those of OpenAssistant's message rows."""
    return set(COLUMNS) <= {c.lower() for c in columns}


@dataclass
class _Message:
    role: Any
    text: Any
    rank: float


@dataclass
class MessageTrees:
    """Message rows gathered in file order; `conversations()` walks each tree once they are all in."""

    messages: dict[str, _Message] = field(default_factory=dict)
    children: dict[str | None, list[str]] = field(default_factory=lambda: defaultdict(list))
    deleted: int = 0

    def add(self, row: Any) -> bool:
        """Take one message row; False when it cannot be part of a tree (not a message, deleted)."""
        if not isinstance(row, dict) or row.get("message_id") is None:
            return False
        if row.get("deleted") is True:
            self.deleted += 1
            return False
        rank = row.get("rank")
        usable_rank = isinstance(rank, int | float) and not (isinstance(rank, float) and math.isnan(rank))
        key = str(row["message_id"])
        if key in self.messages:
            return False  # the same message twice (a file listed twice): one tree, not two
        self.messages[key] = _Message(row.get("role"), row.get("text"), float(rank) if usable_rank else math.inf)
        parent = row.get("parent_id")
        self.children[str(parent) if parent is not None else None].append(key)
        return True

    def conversations(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """(root message id, turns) for every tree, turns as `{role, content}` still to be checked."""
        for root in self.children.get(None, []):
            turns, node = [], root
            while node is not None:
                message = self.messages[node]
                turns.append({"role": message.role, "content": message.text})
                replies = self.children.get(node, [])
                node = min(replies, key=lambda key: self.messages[key].rank) if replies else None
            # A prompt nobody answered (yet) ends many a branch: the conversation ends at the last answer.
            while len(turns) > 1 and turns[-1]["role"] != "assistant":
                turns.pop()
            yield root, turns


def conversation_rows(rows: Iterable[Any], report: Callable[[str], None]) -> Iterator[Any]:
    """Message rows in, one `{"messages": turns}` row a tree out once all are read; broken lines pass through."""
    trees = MessageTrees()
    for row in rows:
        if isinstance(row, InvalidLine):
            yield row  # counted as dropped by the caller, as in any JSON Lines file
        else:
            trees.add(row)
    deleted = f", {trees.deleted:,} deleted left out" if trees.deleted else ""
    report(f"{len(trees.messages):,} messages in {len(trees.children.get(None, [])):,} message trees{deleted} — "
           "one conversation a tree, the best-ranked reply at each turn")
    for _root, turns in trees.conversations():
        yield {"messages": turns}
