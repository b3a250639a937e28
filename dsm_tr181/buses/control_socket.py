"""The local control socket: the original RDK DSM's protocol, served from the data model.

Drop-in for the C++ DSM's ``dsmcli`` (framing in :mod:`dsm_tr181.control_client`): one
framed JSON request per connection, one framed reply, and the original methods with
their result shapes (``ee.list``, ``du.install``, ``du.detail``, ``eu.start`` ...). On
top of that: the generic TR-181 operations (``get``, ``set``, ``add``, ``delete``,
``operate``, ``supported``, ``instances``), ``events`` (a notification stream) and
``"wait": true`` on long commands (progress messages, then the final outcome).

Errors are replies, never tracebacks: ``{"id", "error": text, "fault": {code,
cwmp_code, name, path, message}}``; old clients only read ``error``.

Everything runs on the daemon's asyncio loop, the one that owns the DataModel.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import grp
import json
import logging
import os
import resource
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping, Sized
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from dsm_tr181.buses.bulk_json import BulkEncoder
from dsm_tr181.buses.log_limit import RateLimitedLog
from dsm_tr181.buses.memory import LARGE, LateTrim
from dsm_tr181.buses.shared_reads import SharedReads
from dsm_tr181.buses.sliced_read import read_json
from dsm_tr181.control_client import HEADER, RawJson, encode_frame, reply_frame
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.tables import DU_STATE_CHANGE, DU_TABLE, EE_TABLE, EU_TABLE, INSTALL_DU, SM
from dsm_tr181.runtimes.logread import read_chunk
from dsm_tr181.schema.flavours import Flavour
from dsm_tr181.schema.model import Parameter
from dsm_tr181.schema.types import Value, format_datetime
from dsm_tr181.sections import SectionError
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.notifications import Kind, Notification
from dsm_tr181.tree.paths import parse_path, schema_path
from dsm_tr181.tree.results import OperateResult
from dsm_tr181.tree.supported import SupportedObject, SupportedParam

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME = 1 << 20
# Commands whose outcome a DUStateChange! event also reports, with its OperationPerformed.
DU_OPERATIONS = {"InstallDU()": "Install", "Update()": "Update", "Uninstall()": "Uninstall"}
# How long a waiting client may still get the DUStateChange! after OperationComplete.
EVENT_GRACE = 2.0
EVENT_FLUSH = 1.0  # at shutdown, seconds `events` clients get to receive what is queued for them
_EVENT_FRAMES = 256  # encoded notifications kept for the subscribers still to send them
EVENT_BACKLOG = 1000  # notifications queued for one slow `events` client before it is cut off
MAX_SUBSCRIBERS = 64  # `events` clients at once
MAX_CONNECTIONS = 256  # connections at once, and always well below the descriptor limit
_SPARE_DESCRIPTORS = 64  # kept for the store, runtimes and downloads
_ACCEPT_BACKLOG = 128  # connections the kernel holds until they are accepted
_ACCEPT_RETRY = 0.1  # seconds before accepting again when the process is out of descriptors
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
MAX_PATHS = 1024  # paths (or values) one request may name
MAX_RESULT_VALUES = 200_000  # values one get may return

Params = Mapping[str, Any]
T = TypeVar("T")
S = TypeVar("S", bound=Sized)


class ClientGone(Exception):
    """The client closed its end while the server was still sending."""


class RequestFailed(Exception):
    """A fault to reply with, plus extra keys for the error reply (the DUStateChange! seen)."""

    def __init__(self, fault: Fault, extra: Mapping[str, Any]) -> None:
        super().__init__(fault.describe())
        self.fault = fault
        self.extra = dict(extra)


class Stream:
    """A connection kept open for progress messages or notifications."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request_id: Any) -> None:
        self.request_id = request_id
        self._reader = reader
        self._writer = writer
        self._hangup: asyncio.Task[None] | None = None

    async def send(self, message: Mapping[str, Any] | bytes) -> None:
        """Send a message, or a frame already encoded."""
        if self._writer.is_closing():
            raise ClientGone
        try:
            self._writer.write(message if isinstance(message, bytes) else encode_frame(message))
            await self._writer.drain()
        except ConnectionError:
            raise ClientGone from None

    def write(self, frame: bytes) -> None:
        """Hand ``frame`` to the socket without waiting (see :meth:`keeps_up`)."""
        self._writer.write(frame)

    def keeps_up(self) -> bool:
        """The client reads what it is sent: the socket is open and not backed up."""
        transport = self._writer.transport
        _, high = transport.get_write_buffer_limits()
        return not transport.is_closing() and transport.get_write_buffer_size() <= high

    async def until(self, event: asyncio.Event) -> None:
        """Wait for ``event``; ClientGone if the client hangs up first."""
        if self._hangup is None:
            self._hangup = asyncio.ensure_future(self._until_eof())
        waiter = asyncio.ensure_future(event.wait())
        try:
            done, _ = await asyncio.wait({waiter, self._hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if waiter not in done:
            raise ClientGone

    async def progress(self, info: Mapping[str, Any]) -> None:
        await self.send({"id": self.request_id, "progress": info})

    async def receive(self, queue: asyncio.Queue[T], timeout: float | None = None) -> T:
        """The next queued item; ClientGone if the client hangs up first, TimeoutError after ``timeout``."""
        if self._hangup is None:
            self._hangup = asyncio.ensure_future(self._until_eof())
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({getter, self._hangup}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if self._hangup in done:
            raise ClientGone
        raise TimeoutError

    def abort(self) -> None:
        """Drop the connection now, with whatever is still buffered for it."""
        self._writer.transport.abort()

    def close(self) -> None:
        if self._hangup is not None:
            self._hangup.cancel()
            self._hangup = None  # its coroutine holds this stream: no cycle left for the collector

    async def _until_eof(self) -> None:
        with contextlib.suppress(ConnectionError):
            while await self._reader.read(4096):
                pass  # a client has nothing more to say on this connection


class ControlServer:
    """Serves the control protocol on a UNIX socket, on the running asyncio loop."""

    def __init__(
        self,
        dm: DataModel,
        path: str | os.PathLike[str],
        mode: int = 0o660,
        group: str | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        read_timeout: float = 10.0,
        eu_confinement: Callable[[int], Mapping[str, Any]] | None = None,
        eu_log: Callable[[int], tuple[Path, int]] | None = None,
        eu_processes: Callable[[int], list[dict[str, Any]]] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_subscribers: int = MAX_SUBSCRIBERS,
        event_backlog: int = EVENT_BACKLOG,
        shared_read_seconds: float = 0.0,
    ) -> None:
        """``eu_confinement``: the effective confinement of an EU instance, for eu.detail;
        ``eu_log``: an EU instance's log file and how many backups it keeps, for eu.logs;
        ``eu_processes``: an EU instance's processes (pid, command), for eu.detail;
        ``shared_read_seconds``: how long a large answer is given to the same get (see
        :mod:`~dsm_tr181.buses.shared_reads`)."""
        self._trim = LateTrim()
        self.methods = ControlMethods(
            dm, max_subscribers, event_backlog, eu_confinement, eu_log, eu_processes, shared_read_seconds,
            self._trim.after_large_work,
        )  # fmt: skip
        self.max_connections = min(max_connections, _descriptor_budget())
        self._errors = RateLimitedLog(log)
        self.path = Path(path)
        self.mode = mode
        self.group = group
        self.max_frame = max_frame
        self.read_timeout = read_timeout  # for the request frame to arrive complete
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._inode = 0
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        gid = _group_id(self.group) if self.group else -1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Linux creates the socket file with the socket inode's mode (less the umask):
            # narrowing it before bind() leaves no moment where the file is wider open.
            os.fchmod(sock.fileno(), self.mode)
            sock.bind(str(self.path))
            self._inode = os.stat(self.path).st_ino
            os.chmod(self.path, self.mode)
            if gid != -1:
                os.chown(self.path, -1, gid)
            sock.listen(_ACCEPT_BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            self._unlink()
            raise
        self._listener = sock
        self._acceptor = asyncio.get_running_loop().create_task(self._accept(sock), name="dsm-control-accept")
        log.info("control socket listening on %s", self.path)

    async def close(self) -> None:
        if self._listener is None or self._acceptor is None:
            return
        self._acceptor.cancel()
        await asyncio.gather(self._acceptor, return_exceptions=True)
        self._listener.close()
        self._listener = None
        await self.methods.flush_events(EVENT_FLUSH)
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        self.methods.shared_reads.clear()
        self._trim.cancel()
        self._unlink()

    async def _accept(self, listener: socket.socket) -> None:
        """Each connection is served or refused (and closed) as it is accepted, so connections over
        the cap never pile up as descriptors (asyncio's own loop accepts whole bursts before serving
        any, and at the descriptor limit logs a traceback per failed accept)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
                self._take(conn)
                for _ in range(_ACCEPT_BACKLOG):  # and whoever else is waiting, at once
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    self._take(conn)
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                self._errors.log(logging.WARNING, "cannot accept a control connection: %s", exc.strerror)
                await asyncio.sleep(_ACCEPT_RETRY)

    def _take(self, conn: socket.socket) -> None:
        if len(self._connections) >= self.max_connections:
            self._refuse(conn)
            return
        task = asyncio.get_running_loop().create_task(self._open(conn))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    def _unlink(self) -> None:
        """Remove the socket file, unless another server has replaced it since."""
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()

    async def _open(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn)
        except BaseException:
            conn.close()
            raise
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream: Stream | None = None
        try:
            request_id: Any = None
            method = ""
            try:
                body = await asyncio.wait_for(self._read_frame(reader), self.read_timeout)
                if body is None:
                    return  # connected and left without a word
                request = _decode(body)
                request_id = request.get("id")
                method, params = _method_and_params(request)
                stream = Stream(reader, writer, request_id)
                frames = reply_frame(request_id, await self.methods.call(method, params, stream))
            except (ClientGone, ConnectionError):
                raise  # an expected end, not a failure of the request
            except RequestFailed as failure:
                frames = [encode_frame(_error_reply(request_id, failure.fault, failure.extra))]
            except Fault as fault:
                frames = [encode_frame(_error_reply(request_id, fault))]
            except TimeoutError:
                late = Fault(FaultCode.MESSAGE_FAILED, f"no complete request within {self.read_timeout:g} s")
                frames = [encode_frame(_error_reply(request_id, late))]
            except Exception:
                self._errors.log(logging.ERROR, "control request %r failed", method, exc_info=True)
                frames = [encode_frame(_error_reply(request_id, Fault(FaultCode.INTERNAL_ERROR, "internal error")))]
            large = sum(map(len, frames)) >= LARGE
            while frames:  # piece by piece: a large reply is not copied whole into the transport
                writer.write(frames.pop(0))
                await writer.drain()
            if large:
                self._trim.after_large_work()
        except (ClientGone, ConnectionError):
            log.debug("control client left before the reply")
        except asyncio.CancelledError:
            # close() ends the connections at shutdown; asyncio would log a cancelled
            # client_connected_cb task as an error, so the connection ends quietly here.
            log.debug("control connection closed at shutdown")
        finally:
            if stream is not None:
                stream.close()
            writer.close()

    def _refuse(self, conn: socket.socket) -> None:
        """Over the connection cap: say so at once and hang up (the refusal is not worth a wait)."""
        fault = Fault(FaultCode.RESOURCES_EXCEEDED, f"too many connections (at most {self.max_connections})")
        self._errors.log(logging.WARNING, "refusing a control connection: %s", fault.message)
        with conn, contextlib.suppress(OSError):  # a full socket buffer just loses the explanation
            conn.setblocking(False)
            conn.send(encode_frame(_error_reply(None, fault)))

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            header = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise Fault(FaultCode.MESSAGE_FAILED, "truncated frame header") from None
        (length,) = HEADER.unpack(header)
        if length < 0:
            raise Fault(FaultCode.MESSAGE_FAILED, f"bad frame length {length}")
        if length > self.max_frame:
            raise Fault(FaultCode.RESOURCES_EXCEEDED, f"frame of {length} bytes exceeds the limit of {self.max_frame}")
        try:
            return await reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise Fault(FaultCode.MESSAGE_FAILED, f"truncated frame: {len(exc.partial)} of {length} bytes") from None


class ControlMethods:
    """The protocol's methods over a DataModel, independent of the socket.

    ``call`` returns a JSON-ready result or raises :class:`Fault` (or
    :class:`RequestFailed`). Methods that stream need a :class:`Stream`.
    """

    def __init__(
        self,
        dm: DataModel,
        max_subscribers: int = MAX_SUBSCRIBERS,
        event_backlog: int = EVENT_BACKLOG,
        eu_confinement: Callable[[int], Mapping[str, Any]] | None = None,
        eu_log: Callable[[int], tuple[Path, int]] | None = None,
        eu_processes: Callable[[int], list[dict[str, Any]]] | None = None,
        shared_read_seconds: float = 0.0,
        memory_freed: Callable[[], None] = lambda: None,
    ) -> None:
        """``shared_read_seconds``: see :mod:`~dsm_tr181.buses.shared_reads`; ``memory_freed``
        is called when much memory was just freed (a kept answer, a dropped client's backlog)."""
        self.dm = dm.view(Flavour.USP)  # its generic operations are USP's: no CWMP-only parameters
        self._eu_confinement = eu_confinement
        self._eu_log = eu_log
        self._eu_processes = eu_processes
        self.max_subscribers = max_subscribers
        self.event_backlog = event_backlog
        self._backlogs: dict[Stream, collections.deque[Notification]] = {}  # per `events` client
        # The last notifications' frames, made once for every subscriber (by id, with the
        # notification kept so that its id cannot be reused meanwhile).
        self._event_frames: dict[int, tuple[Notification, bytes]] = {}
        self._objects_encoder, self._flat_encoder = BulkEncoder(), BulkEncoder(flat=True)
        self.shared_reads = SharedReads(self.dm, shared_read_seconds, memory_freed)
        self._memory_freed = memory_freed
        self._methods: dict[str, Callable[[Params, Stream | None], Awaitable[Any]]] = {
            "ee.list": self._ee_list,
            "ee.detail": self._ee_detail,
            "du.list": self._du_list,
            "du.detail": self._du_detail,
            "du.install": self._du_install,
            "du.update": self._du_update,
            "du.uninstall": self._du_uninstall,
            "eu.list": self._eu_list,
            "eu.detail": self._eu_detail,
            "eu.start": self._eu_start,
            "eu.stop": self._eu_stop,
            "eu.logs": self._eu_logs,
            "dsm.save_state": self._save_state,
            "get": self._get,
            "set": self._set,
            "add": self._add,
            "delete": self._delete,
            "operate": self._operate,
            "supported": self._supported,
            "instances": self._instances,
            "events": self._events,
        }

    async def call(self, method: str, params: Params, stream: Stream | None = None) -> Any:
        handler = self._methods.get(method)
        if handler is None:
            raise Fault(FaultCode.MESSAGE_NOT_SUPPORTED, f"method {method!r} is not implemented")
        return await handler(params, stream)

    # == the original DSM's methods ==================================================================

    async def _ee_list(self, params: Params, stream: Stream | None) -> Any:
        rows = self._rows(EE_TABLE)
        return [self._ee_json(p) for p in rows] if _flag(params, "detailed") else [self._text(p, "Name") for p in rows]

    async def _ee_detail(self, params: Params, stream: Stream | None) -> Any:
        return self._ee_json(self._ee(_text(params, "name")))

    async def _du_list(self, params: Params, stream: Stream | None) -> Any:
        rows = self._rows(DU_TABLE)
        return [self._du_json(p) for p in rows] if _flag(params, "detailed") else [self._text(p, "UUID") for p in rows]

    async def _du_detail(self, params: Params, stream: Stream | None) -> Any:
        return self._du_json(self._du(_text(params, "uuid")))

    async def _du_install(self, params: Params, stream: Stream | None) -> Any:
        ee = self._ee(_text(params, "ee_name"))
        args = {"URL": _text(params, "uri"), "ExecutionEnvRef": ee.rstrip(".")}
        args |= _credentials(params) | _signature(params)
        if uuid := _text(params, "uuid", ""):
            args["UUID"] = uuid
        return await self._long_command(params, stream, INSTALL_DU, args, "Installation Started")

    async def _du_update(self, params: Params, stream: Stream | None) -> Any:
        du = self._du(_text(params, "uuid"))
        args = _credentials(params) | _signature(params)
        if uri := _text(params, "uri", ""):
            args["URL"] = uri
        return await self._long_command(params, stream, du + "Update()", args, "Update Started")

    async def _du_uninstall(self, params: Params, stream: Stream | None) -> Any:
        du = self._du(_text(params, "uuid"))
        return await self._long_command(params, stream, du + "Uninstall()", {}, "Uninstallation Started")

    async def _eu_list(self, params: Params, stream: Stream | None) -> Any:
        rows = self._rows(EU_TABLE)
        if not _flag(params, "detailed"):
            return [self._text(p, "EUID") for p in rows]
        owners = self._eu_owners()
        return [self._eu_json(p, owners) for p in rows]

    async def _eu_detail(self, params: Params, stream: Stream | None) -> Any:
        path = self._eu(_text(params, "uid"))
        detail = self._eu_json(path, self._eu_owners())
        if self._eu_confinement is not None:
            detail["confinement"] = dict(self._eu_confinement(_number(path)))
        if self._eu_processes is not None:
            detail["processes"] = list(self._eu_processes(_number(path)))
        return detail

    async def _eu_start(self, params: Params, stream: Stream | None) -> Any:
        return await self._eu_request(params, stream, "Active", "Starting EU")

    async def _eu_stop(self, params: Params, stream: Stream | None) -> Any:
        return await self._eu_request(params, stream, "Idle", "Stopping EU")

    async def _eu_request(self, params: Params, stream: Stream | None, state: str, accepted: str) -> Any:
        """SetRequestedState(``state``); with ``wait``, answered once Status is ``state``.

        It failed when the EU takes a fault (ExecutionFaultCode other than NoFault: a
        start that failed), or when its Status falls back (Starting to Idle, Stopping to
        Active)."""
        eu = self._eu(_text(params, "uid"))
        command, args = eu + "SetRequestedState()", {"RequestedState": state}
        if not _flag(params, "wait"):
            self.dm.operate_one(command, args)
            return accepted
        stream = _need(stream, "wait")
        queue: asyncio.Queue[Notification] = asyncio.Queue()
        subscription = self.dm.subscribe(queue.put_nowait, {Kind.VALUE_CHANGE})  # before: the change may be at once
        try:
            self.dm.operate_one(command, args)
            status = self._text(eu, "Status")
            fell_back = {"Active": ("Starting", "Idle"), "Idle": ("Stopping", "Active")}[state]
            while status != state:
                note = await stream.receive(queue)
                if note.path == eu + "ExecutionFaultCode" and note.value != "NoFault":
                    raise Fault(FaultCode.COMMAND_FAILURE, self._eu_failure(eu, state))
                if note.path == eu + "Status":
                    previous, status = status, str(note.value)
                    await stream.progress({"kind": "status", "path": eu, "status": status})
                    if (previous, status) == fell_back:
                        raise Fault(FaultCode.COMMAND_FAILURE, self._eu_failure(eu, state))
        finally:
            subscription.cancel()
        return f"EU {state}"

    def _eu_failure(self, eu: str, state: str) -> str:
        fault, message = self._text(eu, "ExecutionFaultCode"), self._text(eu, "ExecutionFaultMessage")
        return f"{eu} did not become {state}: {fault}" + (f": {message}" if message else "")

    async def _eu_logs(self, params: Params, stream: Stream | None) -> Any:
        """A chunk of the EU's output after ``cursor`` (see runtimes/logread.py)."""
        path = self._eu(_text(params, "uid"))
        if self._eu_log is None:
            raise Fault(FaultCode.MESSAGE_NOT_SUPPORTED, "this daemon serves no EU logs")
        cursor = params.get("cursor")
        if cursor is not None and not isinstance(cursor, dict):
            raise Fault(FaultCode.INVALID_ARGUMENTS, "cursor must be an object")
        log_file, backups = self._eu_log(_number(path))
        return await asyncio.to_thread(read_chunk, log_file, backups, cursor)

    async def _save_state(self, params: Params, stream: Stream | None) -> Any:
        return "state is journaled continuously; nothing to save"

    # == generic TR-181 operations ====================================================================

    async def _get(self, params: Params, stream: Stream | None) -> Any:
        """``{path: text}``; with ``"objects": true`` (dsmcli) ``{object path: {name: text}}``.
        Read and encoded in slices on the loop, from one state of the tree, letting the
        other clients in between (:mod:`~dsm_tr181.buses.sliced_read`)."""
        paths = list(dict.fromkeys(_texts(params, "paths")))  # the same path twice adds nothing
        max_depth, objects = _count(params, "max_depth"), _flag(params, "objects")
        encoder = self._objects_encoder if objects else self._flat_encoder
        return RawJson(
            await self.shared_reads.read(
                paths, max_depth, encoder, lambda: read_json(self.dm, paths, max_depth, encoder, MAX_RESULT_VALUES)
            )
        )

    async def _set(self, params: Params, stream: Stream | None) -> Any:
        result = self.dm.set(_text_map(params, "values"), _flag(params, "allow_partial"))
        updated = {
            obj.path + name: self._format_param(obj.path + name, value)
            for obj in result.updated
            for name, value in obj.params.items()
        }
        return {"updated": updated, "errors": [{"path": e.path, "fault": _fault_json(e.fault)} for e in result.errors]}

    async def _add(self, params: Params, stream: Stream | None) -> Any:
        results = self.dm.add(_text(params, "path"), _text_map(params, "params", required=False))
        return [{"path": r.path, "unique_keys": self._keys_text(r.path, r.unique_keys)} for r in results]

    async def _delete(self, params: Params, stream: Stream | None) -> Any:
        return {"deleted": [path for r in self.dm.delete(_texts(params, "paths")) for path in r.deleted]}

    async def _operate(self, params: Params, stream: Stream | None) -> Any:
        """One command; on a search or wildcard path, one request per matched object (TR-369
        R-OPR.1, R-OPR.2): ``{"results": [{command, and outputs, request_id or fault}]}``."""
        args = _text_map(params, "args", required=False)
        command = _text(params, "command")
        if not parse_path(command).is_search:
            return await self._long_command(params, stream, command, args, "")
        if _flag(params, "wait"):
            raise Fault(FaultCode.INVALID_ARGUMENTS, "wait follows one command: give a path without a search")
        return {"results": [self._operated_json(result) for result in self.dm.operate(command, args)]}

    def _operated_json(self, result: OperateResult) -> dict[str, Any]:
        if result.fault is not None:
            return {"command": result.command, "fault": _fault_json(result.fault)}
        if result.request is not None:
            return {"command": result.command, "request_id": result.request.id}
        return {"command": result.command, "outputs": self._outputs_text(result)}

    async def _supported(self, params: Params, stream: Stream | None) -> Any:
        found = self.dm.get_supported_dm(_texts(params, "paths"), _flag(params, "first_level_only"))
        return {path: [_supported_json(obj) for obj in objects] for path, objects in found.items()}

    async def _instances(self, params: Params, stream: Stream | None) -> Any:
        found = self.dm.get_instances(_texts(params, "paths"), _flag(params, "first_level_only"))
        return [{"path": r.path, "unique_keys": self._keys_text(r.path, r.unique_keys)} for r in found]

    async def _events(self, params: Params, stream: Stream | None) -> Any:
        stream = _need(stream, "events")
        prefix = _text(params, "prefix", "")
        if len(self._backlogs) >= self.max_subscribers:
            raise Fault(FaultCode.RESOURCES_EXCEEDED, f"too many events clients (at most {self.max_subscribers})")
        # A notification goes straight into the socket of a client that keeps up: a task switch
        # per notification and subscriber made a set cost ~2 ms more with 50 subscribers. It
        # waits in the backlog (shared notifications, made text when sent) while the client's
        # socket is backed up, or earlier ones wait.
        backlog: collections.deque[Notification] = collections.deque()
        waiting = asyncio.Event()
        live = False  # the reply is sent: notifications may follow it

        def deliver(note: Notification) -> None:
            if live and not backlog and stream.keeps_up():
                stream.write(self._event_frame(note))
            elif len(backlog) < self.event_backlog:
                backlog.append(note)
                waiting.set()
            else:
                subscription.cancel()
                log.warning("dropping an events client: it left %d notifications unread", self.event_backlog)
                backlog.clear()  # give the backlog back now
                stream.abort()  # and what the socket still holds for it
                self._memory_freed()  # and the heap it leaves free to the system

        subscription = self.dm.subscribe(deliver, set(Kind), prefix, durable=True)
        self._backlogs[stream] = backlog
        try:
            await stream.send({"id": stream.request_id, "result": {"subscribed": prefix}})
            while True:
                while backlog:
                    await stream.send(self._event_frame(backlog.popleft()))
                live = True
                waiting.clear()
                await stream.until(waiting)
        finally:
            subscription.cancel()
            del self._backlogs[stream]

    def _event_frame(self, note: Notification) -> bytes:
        cached = self._event_frames.get(id(note))
        if cached is None:
            cached = (note, encode_frame({"event": self.notification_json(note)}))
            self._event_frames[id(note)] = cached
            if len(self._event_frames) > _EVENT_FRAMES:
                del self._event_frames[next(iter(self._event_frames))]  # the oldest
        return cached[1]

    @property
    def subscribers(self) -> int:
        return len(self._backlogs)

    async def flush_events(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until every `events` client has been sent what is queued for it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(self._backlogs.values()):
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.01)

    # == long commands ===============================================================================

    async def _long_command(
        self, params: Params, stream: Stream | None, command: str, args: Mapping[str, str], accepted: str
    ) -> Any:
        """Run ``command``: without ``wait`` answer at once, with it follow it to its end."""
        if _flag(params, "wait"):
            return await self._follow(_need(stream, "wait"), command, args)
        result = self.dm.operate_one(command, args)
        if result.request is None:
            return self._outputs_text(result)
        answer = {"request_id": result.request.id}
        return {"response": accepted, **answer} if accepted else {"command": result.command, **answer}

    async def _follow(self, stream: Stream, command: str, args: Mapping[str, str]) -> dict[str, Any]:
        """Stream the progress of an asynchronous command; return its outputs and DUStateChange!."""
        queue: asyncio.Queue[Notification] = asyncio.Queue()
        kinds = {Kind.PROGRESS, Kind.VALUE_CHANGE, Kind.EVENT, Kind.OPERATION_COMPLETE}
        subscription = self.dm.subscribe(queue.put_nowait, kinds)  # before operating: handlers may publish at once
        try:
            result = self.dm.operate_one(command, args)
            if result.request is None:
                return self._outputs_text(result)
            tracker = _Tracker(result, args)
            await stream.progress({"kind": "accepted", "request_id": tracker.request_id, "command": result.command})
            while tracker.completion is None:
                await self._track(stream, tracker, await stream.receive(queue))
            deadline = asyncio.get_running_loop().time() + EVENT_GRACE
            while tracker.operation and tracker.event is None:
                try:
                    note = await stream.receive(queue, timeout=deadline - asyncio.get_running_loop().time())
                except TimeoutError:
                    break
                await self._track(stream, tracker, note)
        finally:
            subscription.cancel()
        completion = tracker.completion
        assert completion is not None
        extra: dict[str, Any] = {}
        if tracker.event is not None:
            extra["DUStateChange"] = self._args_text(tracker.event)
        if completion.fault:
            raise RequestFailed(completion.fault, extra)
        outputs = self._format_outputs(completion.path, completion.args)
        return {**outputs, "request_id": tracker.request_id, **extra}

    async def _track(self, stream: Stream, tracker: _Tracker, note: Notification) -> None:
        if note.kind is Kind.PROGRESS and note.request_id == tracker.request_id:
            if tracker.du_path is None:
                tracker.du_path = note.path
                if self.dm.find_node(note.path) is not None:
                    status = self._text(note.path, "Status")
                    await stream.progress({"kind": "status", "path": note.path, "status": status})
            await stream.progress({"kind": "stage", "path": note.path, **{k: _plain(v) for k, v in note.args.items()}})
        elif note.kind is Kind.VALUE_CHANGE and tracker.du_path and note.path == tracker.du_path + "Status":
            await stream.progress({"kind": "status", "path": tracker.du_path, "status": _plain(note.value)})
        elif note.kind is Kind.EVENT and note.path == DU_STATE_CHANGE and tracker.reports(note):
            tracker.event = note
        elif note.kind is Kind.OPERATION_COMPLETE and note.request_id == tracker.request_id:
            tracker.completion = note
            if tracker.event is None:  # an event seen before the outputs named the UUID
                tracker.event = next((e for e in reversed(tracker.unmatched) if tracker.reports(e)), None)
        elif note.kind is Kind.EVENT and note.path == DU_STATE_CHANGE:
            tracker.unmatched.append(note)

    # == rows ========================================================================================

    def _ee_json(self, path: str) -> dict[str, Any]:
        values = self._row_text(path)
        return {"name": values["Name"], "status": values["Status"], "path": path, "instance": _number(path), **values}

    def _du_json(self, path: str) -> dict[str, Any]:
        """The original keys (URI, UUID, parent-ee, state, eu, eu.path), then the DU's parameters."""
        values = self._row_text(path)
        eus = [ref for ref in self._refs(path, "ExecutionUnitList") if self.dm.find_node(ref)]
        euids = [self._text(ref, "EUID") for ref in eus]
        detail: dict[str, Any] = {
            "URI": values["URL"],
            "UUID": values["UUID"],
            "parent-ee": self._ee_name(path),
            "state": values["Status"],
            "eu": euids[0] if euids else False,
        }
        if eus:
            detail["eu.path"] = eus[0]  # the EU's row; the C++ DSM gave its bundle directory
        return {**detail, "eus": euids, "path": path, "instance": _number(path), **values}

    def _eu_json(self, path: str, owners: Mapping[str, str]) -> dict[str, Any]:
        """The original keys (uid, ee, du, path, status), then the EU's parameters."""
        values = self._row_text(path)
        du = owners.get(path.rstrip("."))
        return {
            "uid": values["EUID"],
            "ee": self._ee_name(path),
            "du": self._text(du, "UUID") if du else "",
            "path": path,
            "status": values["Status"],
            "instance": _number(path),
            **values,
        }

    def _eu_owners(self) -> dict[str, str]:
        """EU reference -> the first DU row whose ExecutionUnitList holds it (one pass over the DUs,
        not one per EU: a detailed eu.list of 1000 EUs would otherwise hold the loop for seconds)."""
        owners: dict[str, str] = {}
        for du in self._rows(DU_TABLE):
            for ref in self._refs(du, "ExecutionUnitList"):
                owners.setdefault(ref, du)
        return owners

    def _ee(self, ident: str) -> str:
        return self._find(EE_TABLE, "Name", ident, FaultCode.UNKNOWN_EE, "execution environment")

    def _du(self, ident: str) -> str:
        return self._find(DU_TABLE, "UUID", ident, FaultCode.UNKNOWN_DU, "deployment unit")

    def _eu(self, ident: str) -> str:
        return self._find(EU_TABLE, "EUID", ident, FaultCode.OBJECT_NOT_FOUND, "execution unit")

    def _find(self, table: str, key: str, ident: str, missing: FaultCode, what: str) -> str:
        """The row whose ``key`` (UUID, EUID, Name), instance number or Alias is ``ident``."""
        indexed = self._indexed(table, key, ident)
        if indexed is not None:
            return indexed
        rows = self.dm.get_instances([table], first_level_only=True)
        if ident.isdigit():
            matches = [r.path for r in rows if r.path == f"{table}{ident}."]
        else:
            matches = [r.path for r in rows if r.unique_keys.get(key) == ident]
            matches = matches or [r.path for r in rows if r.unique_keys.get("Alias") == ident]
        if not matches:
            raise Fault(missing, f"no {what} with {key}, instance number or Alias {ident!r}", table)
        if len(matches) > 1:
            raise Fault(
                FaultCode.INVALID_ARGUMENTS,
                f"{ident!r} names {len(matches)} rows ({', '.join(matches)}): give the instance number or Alias",
                table,
            )
        return matches[0]

    def _indexed(self, table: str, key: str, ident: str) -> str | None:
        """The row of ``ident`` found by a lookup (instance number, or ``key``'s index where it
        holds every row): no scan of every row. None: not found that way."""
        by_number = ident.isdigit()
        node = self.dm.find_node(f"{table}{ident}.") if by_number else self.dm.table(table).find_key(key, ident)
        return node.path if node is not None else None

    def _rows(self, table: str) -> list[str]:
        return [r.path for r in self.dm.get_instances([table], first_level_only=True)]

    def _row_text(self, path: str) -> dict[str, str]:
        (result,) = self.dm.get([path], max_depth=1)
        if result.fault:
            raise result.fault
        return result.resolved[0].text()

    def _refs(self, row: str, name: str) -> tuple[str, ...]:
        value = self.dm.value(row + name)
        return tuple(str(v) for v in value) if isinstance(value, tuple) else ((str(value),) if value else ())

    def _text(self, row: str, name: str) -> str:
        ref = row if row.endswith(".") else row + "."
        return str(self._format_param(ref + name, self.dm.value(ref + name)))  # a parameter: text already

    def _ee_name(self, row: str) -> str:
        """The Name of the ExecEnv a DU or EU row refers to."""
        ee = self._refs(row, "ExecutionEnvRef")
        return self._text(ee[0], "Name") if ee and self.dm.find_node(ee[0]) else ""

    # == values as text ==============================================================================

    def notification_json(self, note: Notification) -> dict[str, Any]:
        event: dict[str, Any] = {"kind": note.kind.value, "path": note.path}
        if note.kind is Kind.VALUE_CHANGE:
            event["value"] = self._format_param(note.path, note.value)
        else:
            event["args"] = self._args_text(note)
        event["request_id"] = note.request_id
        event["fault"] = _fault_json(note.fault) if note.fault else None
        return event

    def _args_text(self, note: Notification) -> dict[str, Any]:
        schema = self.dm.schema
        generic = schema_path(note.path)
        types: Mapping[str, Parameter] = {}
        if note.kind is Kind.EVENT and (event := schema.event(generic)):
            types = event.arguments
        elif note.kind is Kind.OPERATION_COMPLETE and (command := schema.command(generic)):
            types = command.outputs
        elif note.kind is Kind.OBJECT_CREATION and (obj := schema.objects.get(generic)):
            types = obj.parameters
        return _format_with(types, note.args)

    def _format_outputs(self, command_path: str, outputs: Mapping[str, Value]) -> dict[str, Any]:
        command = self.dm.schema.command(schema_path(command_path))
        return _format_with(command.outputs if command else {}, outputs)

    def _outputs_text(self, result: OperateResult) -> dict[str, Any]:
        return self._format_outputs(result.command, result.outputs or {})

    def _format_param(self, path: str, value: Value | None) -> Any:
        parameter = self.dm.schema.parameter(schema_path(path))
        return parameter.type.format(value) if parameter and value is not None else _plain(value)

    def _keys_text(self, row: str, keys: Mapping[str, Value]) -> dict[str, Any]:
        return {name: self._format_param(row + name, value) for name, value in keys.items()}


class _Tracker:
    """What a waiting client has learnt about its asynchronous request."""

    def __init__(self, result: OperateResult, args: Mapping[str, str]) -> None:
        assert result.request is not None
        self.request_id = result.request.id
        obj, _, name = result.command.rpartition(".")
        self.operation = DU_OPERATIONS.get(name) if obj + "." == SM or obj.startswith(DU_TABLE) else None
        self.du_path: str | None = obj + "." if self.operation and obj.startswith(DU_TABLE) else None
        self.uuid = args.get("UUID", "")
        self.completion: Notification | None = None
        self.event: Notification | None = None
        self.unmatched: list[Notification] = []

    def reports(self, event: Notification) -> bool:
        """Is this DUStateChange! about our request's DU? (A failed install names no DU: the LCM
        tags its event with the request's id.)"""
        args = event.args
        if args.get("OperationPerformed") != self.operation:
            return False
        if event.request_id:
            return event.request_id == self.request_id
        uuid = self.uuid or (self.completion.args.get("UUID", "") if self.completion else "")
        ref = self.du_path.rstrip(".") if self.du_path else ""
        return bool(ref and args.get("DeploymentUnitRef") == ref) or bool(uuid and args.get("UUID") == uuid)


# == request parsing ================================================================================


def _decode(body: bytes) -> dict[str, Any]:
    try:
        request = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise Fault(FaultCode.MESSAGE_FAILED, f"malformed JSON request: {exc}") from None
    if not isinstance(request, dict):
        raise Fault(FaultCode.MESSAGE_FAILED, "a request must be a JSON object")
    return request


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: a request carrying one could not even be answered in JSON."""
    raise ValueError(f"{name} is not a JSON value")


def _method_and_params(request: Mapping[str, Any]) -> tuple[str, Params]:
    method = request.get("method")
    params = request.get("params", {})
    if not isinstance(method, str):
        raise Fault(FaultCode.MESSAGE_FAILED, "the request has no method name")
    if not isinstance(params, dict):
        raise Fault(FaultCode.INVALID_ARGUMENTS, "params must be a JSON object")
    return method, params


def _wrong(name: str, expected: str) -> Fault:
    return Fault(FaultCode.INVALID_ARGUMENTS, f"parameter {name!r} must be {expected}")


def _text(params: Params, name: str, default: str | None = None) -> str:
    value = params.get(name, default)
    if value is None:
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"missing parameter {name!r}")
    if not isinstance(value, str):
        raise _wrong(name, "a string")
    return value


def _flag(params: Params, name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise _wrong(name, "true or false")
    return value


def _count(params: Params, name: str) -> int:
    value = params.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _wrong(name, "a non-negative integer")
    return value


def _texts(params: Params, name: str) -> list[str]:
    value = params.get(name)
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _wrong(name, "a non-empty list of strings")
    return _bounded(value, name)


def _text_map(params: Params, name: str, required: bool = True) -> dict[str, str]:
    value = params.get(name, None if required else {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _wrong(name, "an object of strings")
    return _bounded(value, name)


def _bounded(value: S, name: str) -> S:
    """One request names at most MAX_PATHS paths: the work of one client stays bounded."""
    if len(value) > MAX_PATHS:
        raise Fault(FaultCode.RESOURCES_EXCEEDED, f"parameter {name!r} names {len(value)} items: at most {MAX_PATHS}")
    return value


def _credentials(params: Params) -> dict[str, str]:
    """Username and Password arguments, when given (never logged, never echoed)."""
    args = {"Username": _text(params, "username", ""), "Password": _text(params, "password", "")}
    return {name: value for name, value in args.items() if value}


def _signature(params: Params) -> dict[str, str]:
    """The Signature argument (a URL or data: URI), when given."""
    signature = _text(params, "signature", "")
    return {"Signature": signature} if signature else {}


def _need(stream: Stream | None, what: str) -> Stream:
    if stream is None:
        raise Fault(FaultCode.REQUEST_DENIED, f"{what} needs a connection to the daemon")
    return stream


# == replies =========================================================================================


def _error_reply(request_id: Any, fault: Fault, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    reply = {"id": request_id, "error": fault.describe(), "fault": _fault_json(fault)}
    return {**reply, **(extra or {})}


def _fault_json(fault: Fault) -> dict[str, Any]:
    data: dict[str, Any] = fault.as_dict()
    if fault.details:
        data["details"] = [d.as_dict() for d in fault.details]
    return data


def _supported_json(obj: SupportedObject) -> dict[str, Any]:
    def param(p: SupportedParam) -> dict[str, str]:
        return {"name": p.name, "access": p.access, "type": p.type.describe()}

    return {
        "path": obj.path,
        "access": obj.access,
        "multi_instance": obj.is_multi_instance,
        "unique_keys": obj.unique_key_sets,
        "params": [param(p) for p in obj.params],
        "commands": [
            {
                "name": c.name,
                "type": c.command_type,
                "inputs": [param(p) for p in c.input_args],
                "outputs": [param(p) for p in c.output_args],
            }
            for c in obj.commands
        ],
        "events": [{"name": e.name, "args": [param(p) for p in e.args]} for e in obj.events],
    }


def _format_with(types: Mapping[str, Parameter], values: Mapping[str, Value]) -> dict[str, Any]:
    """Values in their TR-106 text encoding where the schema types them, plain JSON otherwise."""
    shown: dict[str, Any] = {}
    for name, value in values.items():
        parameter = types.get(schema_path(name))
        shown[name] = parameter.type.format(value) if parameter else _plain(value)
    return shown


def _plain(value: Value | None) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _number(row: str) -> int:
    return int(row.rstrip(".").rpartition(".")[2])


# == the socket file ==================================================================================


def _descriptor_budget() -> int:
    """Connections the descriptor limit leaves room for (an accept() at the limit fails in a loop)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, soft - _SPARE_DESCRIPTORS)


def _group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SectionError("daemon", "socket_group", f"group {name!r} does not exist") from None


def _remove_stale(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse to take over a live one or another file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()
            return
    raise FileExistsError(f"another server is listening on {path}")
