"""``python:package.module:callable``: an in-process consumer.

The callable gets each event as a dict (its own copy).  It may be sync or async; it runs
in this sink's own task, so a slow one delays only this sink (a sync one holds the event
loop while it runs: keep it quick, or make it async).  What it raises is logged and the
event counted as failed; the sink goes on with the next event.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import SinkDeliveryError, SinkSpec, SinkSpecError

__all__ = ["PythonSink", "from_spec", "load_callable"]

log = logging.getLogger("earpiece.sinks")


def load_callable(target: str) -> Callable[[dict[str, Any]], Any]:
    """``package.module:attr[.attr]`` → the object (``SinkSpecError`` if it is not there)."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise SinkSpecError(f"bad sink 'python:{target}': expected python:package.module:callable")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # an import can fail in any way; the user needs the reason
        raise SinkSpecError(f"sink python:{target}: cannot import {module_name!r}: {exc}") from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SinkSpecError(f"sink python:{target}: {module_name!r} has no {attr_path!r}") from None
    if not callable(obj):
        raise SinkSpecError(f"sink python:{target}: {attr_path!r} is not callable")
    return obj


class PythonSink:
    """A ``SinkWriter`` calling ``fn(event_dict)`` per event, awaiting it when it
    returns an awaitable.  ``write`` raises ``SinkDeliveryError(lost=n)`` after the
    batch when ``n`` calls raised (each logged)."""

    def __init__(self, fn: Callable[[dict[str, Any]], Any], name: str) -> None:
        self._fn = fn
        self.name = name

    async def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        failed = 0
        for event in events:
            try:
                result = self._fn(dict(event))
                if inspect.isawaitable(result):
                    await result
            except Exception:
                failed += 1
                if failed == 1:  # one traceback per batch is enough to find the bug
                    log.exception("sink %s raised on %s event seq %s of %s", self.name, event.get("type"),
                                  event.get("seq"), event.get("call_sid"))
        if failed:
            raise SinkDeliveryError(f"the callable raised on {failed} of {len(events)} events", lost=failed)

    async def aclose(self) -> None:
        return None


def from_spec(spec: SinkSpec, env: Mapping[str, str]) -> PythonSink:
    if spec.options:
        raise SinkSpecError(f"bad sink {spec.shown!r}: python takes no options other than types=")
    return PythonSink(load_callable(spec.target), name=f"python:{spec.target}")
