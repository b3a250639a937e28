"""A GLib main loop in a daemon thread, bridged to asyncio.

GLib-based libraries (Gio's D-Bus connections, pydbus) deliver replies and signals
through a ``GLib.MainContext``. The daemon's asyncio loop must never block on them and
must never have its state touched from a GLib callback. :class:`GLibThread` gives them a
context of their own, iterated by a ``GLib.MainLoop`` in one daemon thread:

- :meth:`GLibThread.call` runs a plain callable on the GLib thread and resolves an
  asyncio future with its result or exception;
- :meth:`GLibThread.call_async` runs a callable that *starts* an asynchronous GLib
  operation (e.g. ``Gio.DBusConnection.call``) and completes the future later, from a
  GLib callback, through the :class:`Completion` it is given;
- in the other direction, GLib callbacks hand work to the asyncio loop with
  ``loop.call_soon_threadsafe`` (or ``asyncio.run_coroutine_threadsafe``).

Objects bound to the context (connections, signal subscriptions, exported objects)
must be created on the GLib thread — inside a callable given to ``call``/``call_async``
— so that GLib dispatches their callbacks there: the context is the thread's default
context while the loop runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from dsm_tr181.gi_repository import GLib

_log = logging.getLogger(__name__)
_SOURCE_REMOVE: bool = GLib.SOURCE_REMOVE  # a source callback's "run no more" (gi is untyped)

T = TypeVar("T")


class Completion(Generic[T]):
    """Resolves one asyncio future from the GLib thread; later calls are ignored."""

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[T]) -> None:
        self._loop = loop
        self._future = future
        self._done = False

    def set_result(self, value: T) -> None:
        self._resolve(lambda: self._future.set_result(value))

    def set_exception(self, exc: BaseException) -> None:
        self._resolve(lambda: self._future.set_exception(exc))

    def _resolve(self, action: Callable[[], None]) -> None:
        if self._done:
            return
        self._done = True

        def apply() -> None:
            if not self._future.done():  # the awaiting side may have been cancelled
                action()

        try:
            self._loop.call_soon_threadsafe(apply)
        except RuntimeError:  # the asyncio loop is closed: nobody is waiting any more
            _log.debug("result dropped: the asyncio loop is closed")


class GLibThread:
    """Owns a ``GLib.MainContext`` and iterates it with a ``GLib.MainLoop`` in a daemon thread."""

    def __init__(self, name: str = "glib") -> None:
        self.context = GLib.MainContext.new()
        self._loop = GLib.MainLoop.new(self.context, False)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()

    def start(self) -> None:
        """Start the thread and return once its loop is running (no-op if already started).

        A stopped GLibThread cannot be started again.
        """
        if self._started.is_set():
            return
        self._thread.start()
        if not self._started.wait(10.0):
            raise RuntimeError("the GLib main loop did not start")

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started.is_set() and self._thread.is_alive()

    def in_thread(self) -> bool:
        """True when called on the GLib thread itself."""
        return threading.current_thread() is self._thread

    def invoke(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the GLib thread soon (fire and forget; exceptions are logged)."""

        def once(*_user_data: object) -> bool:
            try:
                fn()
            except Exception:
                _log.exception("unhandled error on the GLib thread")
            return _SOURCE_REMOVE

        source = GLib.idle_source_new()
        source.set_callback(once)
        source.attach(self.context)

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on the GLib thread; its result (or exception) resolves the returned future.

        Must be called from a running asyncio loop, which receives the result.
        """
        completion: Completion[T]
        future: asyncio.Future[T]
        completion, future = self._completion_for_running_loop()

        def job() -> None:
            try:
                completion.set_result(fn())
            except Exception as exc:
                completion.set_exception(exc)

        self.invoke(job)
        return future

    def call_async(self, start: Callable[[Completion[T]], None]) -> asyncio.Future[T]:
        """Run ``start(completion)`` on the GLib thread; it resolves the future later.

        ``start`` typically begins an asynchronous GLib operation whose callback calls
        ``completion.set_result``/``set_exception``. If ``start`` itself raises, the
        future fails with that exception.
        """
        completion: Completion[T]
        future: asyncio.Future[T]
        completion, future = self._completion_for_running_loop()

        def job() -> None:
            try:
                start(completion)
            except Exception as exc:
                completion.set_exception(exc)

        self.invoke(job)
        return future

    def stop(self, timeout: float = 5.0) -> None:
        """Quit the loop and join the thread (no-op if it never started or already stopped)."""
        if not self._thread.is_alive():
            return
        self.invoke(self._loop.quit)
        if not self.in_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        self.context.push_thread_default()
        try:
            self.invoke(self._started.set)
            self._loop.run()
        finally:
            self.context.pop_thread_default()

    def _completion_for_running_loop(self) -> tuple[Completion[T], asyncio.Future[T]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        return Completion(loop, future), future
