"""The one place that makes every Install, Update and Uninstall end properly, whatever is raised inside it.

An operation body runs inside :func:`ends_with`. Whatever leaves the body — a
:class:`~dsm_tr181.errors.Fault`, a cancellation, or an exception nobody foresaw —
becomes a Fault, the operation's ``abandon`` runs (it cleans up and publishes the
DUStateChange!), and the caller sees that Fault. ``abandon`` is made of
:func:`cleanup` steps: one failing step (a full disk, a closed store) is logged and
the next ones, the event last, still run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from dsm_tr181.errors import Fault, FaultCode

log = logging.getLogger(__name__)


def fault_of(exc: BaseException, what: str) -> Fault:
    """The fault an operation ends with when ``exc`` ended it."""
    if isinstance(exc, Fault) and exc.code is FaultCode.RESOURCES_EXCEEDED:  # the store's file system is full
        return Fault(FaultCode.SYSTEM_RESOURCES_EXCEEDED, exc.message, exc.path)  # as DUStateChange! names it
    if isinstance(exc, Fault):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return Fault(FaultCode.COMMAND_CANCELED, f"{what} canceled")
    log.error("%s failed unexpectedly", what, exc_info=exc)
    return Fault(FaultCode.INTERNAL_ERROR, f"{what} failed ({type(exc).__name__})")


@asynccontextmanager
async def ends_with(what: str, abandon: Callable[[Fault], Awaitable[None]]) -> AsyncIterator[None]:
    """Run the block; if anything leaves it, ``abandon(fault)`` and raise the fault instead."""
    try:
        yield
    except BaseException as exc:
        fault = fault_of(exc, what)
        await abandon(fault)
        if exc is fault or not isinstance(exc, Exception):  # cancellations and exits stay what they are
            raise
        raise fault from exc


async def cleanup(what: str, *steps: Callable[[], object]) -> None:
    """Run every step (a function, or one returning an awaitable) even when an earlier one fails
    or the task is cancelled meanwhile (at shutdown): the cancellation is raised after the last step."""
    cancelled = False
    for step in steps:
        try:
            result = step()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            log.exception("%s: a clean-up step failed", what)
    if cancelled:
        raise asyncio.CancelledError
