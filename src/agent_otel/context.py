"""Session context: which conversation (and user) the spans started here belong to.

State lives in a :class:`contextvars.ContextVar` only, so sessions are independent per thread and
per asyncio task, nest cleanly, and re-running a notebook cell never leaves stale global state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Session:
    """What :func:`session` puts in context: the conversation id (``gen_ai.conversation.id``) and user."""

    conversation_id: str
    user_id: str | None = None


_SESSION: ContextVar[Session | None] = ContextVar("agent_otel_session", default=None)


def current_session() -> Session | None:
    """The innermost active session in this thread/task, or None."""
    return _SESSION.get()


@contextmanager
def session(conversation_id: str | None = None, user_id: str | None = None) -> Iterator[Session]:
    """Group the agent turns run inside this block into one conversation.

    Every taxonomy span started inside carries ``gen_ai.conversation.id`` (and ``user.id`` when
    given). Without ``conversation_id`` a fresh random id is made. Usable with ``with`` in sync and
    async code alike, and as a decorator of sync functions. Sessions nest; the inner one wins
    (an inner session without ``user_id`` keeps the outer one's user).
    """
    if user_id is None:
        outer = _SESSION.get()
        user_id = outer.user_id if outer is not None else None
    current = Session(conversation_id=str(conversation_id or uuid.uuid4().hex), user_id=user_id)
    token = _SESSION.set(current)
    try:
        yield current
    finally:
        try:
            _SESSION.reset(token)
        except ValueError:
            # Exited in another context (e.g. a generator finalised elsewhere): nothing to undo here.
            pass
