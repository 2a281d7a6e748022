"""Exceptions the dataflow engine raises on the driver."""

from __future__ import annotations

import pickle
import traceback


class ActorDiedError(RuntimeError):
    """The actor behind a call is dead (killed, crashed, or its node went away).

    Raised by ``executor.get`` on both executors; the Ray exception, when there is one, is kept
    as ``__cause__``.

    Examples:
        >>> isinstance(ActorDiedError("worker 3 is gone"), RuntimeError)
        True
    """


class ActorStalledError(ActorDiedError):
    """An actor gave no reply within its shard's ``reply_timeout_s`` (e.g. an env that hangs
    in ``step()``); the engine treats it as dead: it is replaced (``on_actor_failure``) or the
    plan fails naming the shard.

    Examples:
        >>> isinstance(ActorStalledError("no reply for 30 s"), ActorDiedError)
        True
    """


class FlowError(RuntimeError):
    """A failure inside a plan operator, raised on the driver.

    The message names the operator as the user wrote it, the plan lineage up to it, the shard
    (or ``driver``), the original exception type and message, and the original (possibly
    remote) traceback. The original exception is ``__cause__`` where it could be carried over.

    Attributes:
        operator: The operator's label, e.g. ``for_each(parse_row)``.
        lineage: The plan up to and including the operator.
        shard: The shard index, or None when the operator ran on the driver.
        original_type: Name of the original exception's type.
        original_message: ``str()`` of the original exception.
        remote_traceback: The formatted original traceback.

    Examples:
        >>> err = FlowError(operator="for_each(f)", lineage="from_range[4, shards=2].for_each(f)",
        ...                 shard=1, original_type="ValueError", original_message="bad",
        ...                 remote_traceback="")
        >>> print(str(err).splitlines()[0])
        for_each(f) failed on shard 1: ValueError: bad
    """

    def __init__(
        self,
        *,
        operator: str,
        lineage: str,
        shard: int | None,
        original_type: str,
        original_message: str,
        remote_traceback: str,
    ) -> None:
        self.operator = operator
        self.lineage = lineage
        self.shard = shard
        self.original_type = original_type
        self.original_message = original_message
        self.remote_traceback = remote_traceback
        self.original: BaseException | None = None
        where = "on the driver" if shard is None else f"on shard {shard}"
        lines = [
            f"{operator} failed {where}: {original_type}: {original_message}",
            f"  operator: {operator}",
            f"  plan:     {lineage}",
            f"  shard:    {'driver' if shard is None else shard}",
        ]
        if remote_traceback:
            lines.append("Original traceback:")
            lines.append(remote_traceback.rstrip())
        super().__init__("\n".join(lines))

    def __reduce__(self):  # keyword-only __init__: pickle through a helper
        return (_rebuild_flow_error, (self._fields(), _picklable_or_none(self.original)))

    def _fields(self) -> dict:
        return {
            "operator": self.operator,
            "lineage": self.lineage,
            "shard": self.shard,
            "original_type": self.original_type,
            "original_message": self.original_message,
            "remote_traceback": self.remote_traceback,
        }


def _rebuild_flow_error(fields: dict, original: BaseException | None) -> FlowError:
    err = FlowError(**fields)
    err.original = original
    if original is not None:
        err.__cause__ = original
    return err


def _picklable_or_none(exc: BaseException | None) -> BaseException | None:
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure means "not picklable"; the FlowError
        return None  # still carries the original's type, message and traceback as text
    return exc


def operator_error(
    exc: BaseException, *, operator: str, lineage: str, shard: int | None
) -> FlowError:
    """Wraps ``exc`` raised inside ``operator`` into a FlowError; a FlowError passes unchanged."""
    if isinstance(exc, FlowError):
        return exc
    text = getattr(exc, "remote_traceback", None)  # set for a failed Ray task
    if not isinstance(text, str) or not text:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    err = FlowError(
        operator=operator,
        lineage=lineage,
        shard=shard,
        original_type=type(exc).__name__,
        original_message=str(exc),
        remote_traceback=text,
    )
    err.original = exc
    err.__cause__ = exc
    return err


def with_shard(err: FlowError, shard: int) -> FlowError:
    """Returns ``err`` re-created with ``shard`` filled in (errors born in a shard chain)."""
    if err.shard == shard:
        return err
    fields = err._fields()
    fields["shard"] = shard
    return _rebuild_flow_error(fields, err.original)
