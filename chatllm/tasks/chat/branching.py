"""Branches: a conversation forked at a turn into a new saved conversation, the old one left as it was.

`/branch` forks at the current turn, `/edit N` forks before turn N and sends the rewritten message there, and
`chat --resume ID@N` goes on from turn N of conversation ID. A branch is a conversation of its own in the store (its
parent's first exchanges copied, the parent and the turn it forked at kept beside them), so every other command
(history, search, export, delete) works on it unchanged; `history show ID --tree` draws the family.

The model's KV state of the shared prefix is reused: in the same chat the engine still holds it, and a new process
restores the parent's state saved on disk (WarmStart finds the saved state sharing the longest prefix), so a branch
evaluates only what differs.
"""

from __future__ import annotations

from typing import Sequence

from chatllm.errors import UsageError
from chatllm.storage.conversations import StoredConversation, StoredSummary, Summary
from chatllm.tasks.chat.compaction import RunningSummary
from chatllm.tasks.chat.conversation import Conversation


def parse_resume(value: str) -> tuple[int, int | None]:
    """`ID` or `ID@N` (go on from turn N of conversation ID) as (id, N or None)."""
    head, sep, turn = value.strip().partition("@")
    try:
        conv_id = int(head)
        at = int(turn) if sep else None
    except ValueError:
        raise UsageError(f"--resume takes ID or ID@TURN, not {value!r}",
                         "for example --resume 12, or --resume 12@3 to branch after its third exchange") from None
    if conv_id < 1 or (at is not None and at < 0):
        raise UsageError(f"--resume takes ID or ID@TURN with positive numbers, not {value!r}",
                         "ids come from `chatllm history`")
    return conv_id, at


def check_turn(stored: StoredConversation, at: int) -> None:
    """A UsageError unless conversation `stored` has a turn `at` to go on from (0: before its first exchange)."""
    if at > len(stored.exchanges):
        n = len(stored.exchanges)
        raise UsageError(f"conversation {stored.id} has {n} exchange{'' if n == 1 else 's'}, no turn {at}",
                         f"give a turn from 0 to {n}, e.g. --resume {stored.id}@{n}")


def kept_summary(summary: RunningSummary, window_start: int, at: int) -> tuple[RunningSummary, int]:
    """The summary a branch at turn `at` may keep (none when it holds later exchanges) and where its view starts."""
    if summary.upto > at:
        return RunningSummary(), 0
    return RunningSummary(summary.text, summary.upto, summary.compactions, list(summary.facts)), min(window_start, at)


def fork(conv: Conversation, at: int | None = None) -> int:
    """Save the conversation's first `at` exchanges (all by default) as a new branch and go on in it; its id."""
    if conv.store is None:
        raise UsageError("branches need the conversation store", "chat with `chatllm chat`, which saves every exchange")
    if conv.id is None or not conv.exchanges:
        raise UsageError("nothing to branch yet", "send a message first")
    at = len(conv.exchanges) if at is None else at
    if not 0 <= at <= len(conv.exchanges):
        raise UsageError(f"no turn {at}: the conversation has {len(conv.exchanges)}", "")
    summary, start = kept_summary(conv.summary, conv.window_start, at)
    stored = StoredSummary(summary.text, summary.upto, start, summary.compactions, list(summary.facts), conv.model)
    new_id = conv.store.create(conv.model, conv.system, conv.exchanges[:at], parent_id=conv.id, fork_seq=at,
                               summary=stored if summary.upto or start else None)
    conv.branch_to(new_id, at, summary, start)
    return new_id


def edit_turn(conv: Conversation, n: int) -> int:
    """Fork before turn n (1-based) so the rewritten message n is sent in a new branch; the branch's id."""
    if not conv.exchanges:
        raise UsageError("nothing to edit yet", "send a message first")
    if not 1 <= n <= len(conv.exchanges):
        count = len(conv.exchanges)
        raise UsageError(f"no message {n}: the conversation has {count} exchange{'' if count == 1 else 's'}",
                         f"give a number from 1 to {count}, e.g. /edit {count} new text")
    return fork(conv, n - 1)


def resume_at(conv: Conversation, stored: StoredConversation, at: int, system: str | None = None) -> int | None:
    """Take up conversation `stored` at turn `at`: itself when that is its end, else a new branch; the branch's id."""
    check_turn(stored, at)
    if at == len(stored.exchanges):
        conv.resume(stored, system)
        return None
    conv.resume(stored)
    branch = fork(conv, at) if conv.exchanges else _fork_empty(conv, stored, at)
    if system is not None and system != conv.system:
        conv.set_system(system)  # the branch's, never the parent's
    return branch


def _fork_empty(conv: Conversation, stored: StoredConversation, at: int) -> int:
    """A branch at turn 0 of a conversation: nothing copied but the system prompt and the family link."""
    assert conv.store is not None
    new_id = conv.store.create(conv.model, conv.system, [], parent_id=stored.id, fork_seq=at)
    conv.branch_to(new_id, 0, RunningSummary(), 0)
    return new_id


def tree_rows(nodes: Sequence[Summary]) -> list[tuple[str, Summary]]:
    """Each conversation of a branch tree with the drawing before it (├─, └─, │), in Store.tree order."""
    children: dict[int | None, list[Summary]] = {}
    ids = {n.id for n in nodes}
    for node in nodes:
        parent = node.parent_id if node.parent_id in ids else None
        children.setdefault(parent, []).append(node)
    rows: list[tuple[str, Summary]] = []

    def walk(node: Summary, lead: str, last: bool, top: bool) -> None:
        rows.append(("" if top else lead + ("└─ " if last else "├─ "), node))
        kids = children.get(node.id, [])
        for i, kid in enumerate(kids):
            walk(kid, lead if top else lead + ("   " if last else "│  "), i == len(kids) - 1, False)

    for root in children.get(None, []):
        walk(root, "", True, True)
    return rows
