"""dsmcli: the command line of the dsm daemon, over its local control socket.

The original DSM verbs (``ee.list``, ``du.install``, ``eu.start`` ...) and the generic
TR-181 ones (``get``, ``set``, ``operate`` ...). Exit codes: 0 success, 1 the daemon
returned an error (or the output could not be written), 2 usage error, 3 the daemon
cannot be reached, 141 the reader of the output left.

Start-up is part of every command's time: only what a socket client needs is imported
at the top (no asyncio, no data model, schema, lxml or cryptography: ``--local`` and
the password prompt import theirs when used).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType

from dsm_tr181.control_client import (
    ClientError,
    ControlClient,
    DaemonError,
    Message,
    Unreachable,
    default_socket_path,
)

TYPE_CHECKING = False  # not even typing is imported at start-up
if TYPE_CHECKING:
    from typing import IO, Any, NoReturn, Protocol
else:
    Protocol = object  # Caller is only a type

EXIT_OK, EXIT_FAULT, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_READER_GONE = 128 + 13  # a shell's status for SIGPIPE
LOCAL_VERBS = ("get", "instances", "supported")
# Table verbs: help, what an empty table says, (column header, key of the detailed row).
LISTS: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "ee.list": (
        "list the execution environments",
        "no execution environments",
        (("#", "instance"), ("ALIAS", "Alias"), ("NAME", "Name"), ("STATUS", "Status"), ("ENABLE", "Enable"),
         ("TYPE", "Type"), ("VERSION", "Version")),
    ),
    "du.list": (
        "list the deployment units",
        "no deployment units",
        (("#", "instance"), ("ALIAS", "Alias"), ("UUID", "UUID"), ("NAME", "Name"), ("VERSION", "Version"),
         ("STATUS", "Status"), ("EE", "parent-ee"), ("EUS", "eus")),
    ),
    "eu.list": (
        "list the execution units",
        "no execution units",
        (("#", "instance"), ("ALIAS", "Alias"), ("EUID", "EUID"), ("NAME", "Name"), ("VERSION", "Version"),
         ("STATUS", "Status"), ("EE", "ee"), ("DU", "du")),
    ),
}  # fmt: skip


class Caller(Protocol):
    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any: ...


class LocalModel:
    """A fresh data model in this process, as a daemon starts with: no daemon needed."""

    def __init__(self) -> None:
        from dsm_tr181.buses.control_socket import ControlMethods
        from dsm_tr181.schema import SchemaError, load_schema
        from dsm_tr181.tree.datamodel import DataModel

        try:
            schema = load_schema()
        except (SchemaError, OSError) as exc:
            raise ClientError(f"cannot load the data model: {exc}") from None
        self._methods = ControlMethods(DataModel(schema))

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        import asyncio

        from dsm_tr181.control_client import RawJson
        from dsm_tr181.errors import Fault

        try:
            result = asyncio.run(self._methods.call(method, params or {}))
        except Fault as fault:
            raise DaemonError(fault.describe(), fault.as_dict()) from None
        return result.decode() if isinstance(result, RawJson) else result


# == output ===========================================================================================


def show(value: Any) -> str:
    """A JSON value as one line of text (lists comma-separated, as TR-106 writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(show(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={show(v)}" for k, v in value.items())
    return str(value)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def print_pairs(values: Mapping[str, Any], prefix: str = "") -> None:
    """``name = value`` lines; nested objects as ``outer.inner = value``."""
    for name, value in values.items():
        if isinstance(value, dict) and value:
            print_pairs(value, f"{prefix}{name}.")
        else:
            print(f"{prefix}{name} = {show(value)}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    if not rows:
        print(empty)
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in (headers, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class ProgressPrinter:
    """Progress of a --wait request on stderr: one live line on a terminal, one line per stage otherwise;
    for an image, one more line per layer once it is in (its bytes of its size, or already stored)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.live = out.isatty()
        self._stage = ""
        self._line_open = False
        self._layers_shown: set[str] = set()

    def __call__(self, info: Message) -> None:
        kind = info.get("kind")
        if kind == "stage":
            layer = self._layer(info)
            self._stage_progress(str(info.get("stage", "")), _int(info.get("done")), _int(info.get("total")), layer)
        elif kind == "status":
            self._line(f"{str(info.get('path', '')).rstrip('.')}: {info.get('status', '')}")
        elif kind == "accepted":
            self._line(f"request {info.get('request_id')} accepted: {info.get('command', '')}")

    def close(self) -> None:
        if self._line_open:
            self.out.write("\n")
            self._line_open = False
        self.out.flush()

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _layer(self, info: Message) -> str:
        """Print a layer that is in; the live text of one under way ("" for none)."""
        layer = str(info.get("layer") or "")
        if not layer:
            return ""
        number, _, digest = layer.partition(" ")
        name = f"layer {number} {digest[:19]}"  # sha256: and 12 hex digits
        done, total = _int(info.get("layer_done")), _int(info.get("layer_total"))
        if done < total:
            return f"{name}: {size(done)} of {size(total)}"
        if layer not in self._layers_shown:
            self._layers_shown.add(layer)
            stored = f"already stored ({size(total)})" if info.get("layer_stored") else f"{size(done)} of {size(total)}"
            self._line(f"{name}: {stored}", replace=True)
        return ""

    def _stage_progress(self, stage: str, done: int, total: int, layer: str = "") -> None:
        if total > 0:
            text = f"{stage}: {size(done)} of {size(total)} ({100 * done // total}%)"
        else:
            text = f"{stage}: {size(done)}" if done else stage
        text += f", {layer}" if layer else ""
        if self.live:
            self.out.write(f"\r{text}\033[K")
            self.out.flush()
            self._line_open = True
        elif stage != self._stage:
            self._line(f"{stage}..." + (f" ({size(total)})" if total > 0 else ""))
        self._stage = stage

    def _line(self, text: str, *, replace: bool = False) -> None:
        if replace and self._line_open:  # the line takes the live line's place
            self.out.write("\r")
            text += "\033[K"
            self._line_open = False
        self.close()
        self.out.write(text + "\n")
        self.out.flush()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# == verbs ============================================================================================


def _list(method: str) -> Callable[..., int]:
    _, empty, columns = LISTS[method]

    def run(client: Caller, args: argparse.Namespace) -> int:
        rows = client.call(method, {"detailed": True})
        if args.json:
            print_json(rows)
        elif rows and not isinstance(rows[0], dict):  # an older daemon answers with names only
            print("\n".join(show(row) for row in rows))
        else:
            print_table([c[0] for c in columns], [[show(row.get(c[1])) for c in columns] for row in rows], empty)
        return EXIT_OK

    return run


def _by_id(method: str, param: str) -> Callable[..., int]:
    """A verb that sends its ID argument as ``param`` and prints the result."""

    def run(client: Caller, args: argparse.Namespace) -> int:
        return _print_result(args, client.call(method, {param: args.id}))

    return run


def _print_result(args: argparse.Namespace, result: Any) -> int:
    if args.json:
        print_json(result)
    elif isinstance(result, dict):
        print_pairs(result)
    elif isinstance(result, list):
        for item in result:
            print(show(item))
    else:
        print(show(result))
    return EXIT_OK


def _long(client: ControlClient, args: argparse.Namespace, method: str, params: dict[str, Any]) -> int:
    """A long command: answered at once, or followed to its end with --wait."""
    if not args.wait:
        result = client.call(method, params)
        if isinstance(result, dict) and "response" in result and not args.json:
            print(f"{result['response']} (request {result.get('request_id', '?')})")
            return EXIT_OK
        return _print_result(args, result)
    try:
        with ProgressPrinter(sys.stderr) as progress:
            result = client.follow(method, params, progress)
    except KeyboardInterrupt:
        print("dsmcli: stopped following; the request goes on in the daemon", file=sys.stderr)
        return 130
    return _print_result(args, result)


def _credentials(args: argparse.Namespace) -> dict[str, str]:
    params = {}
    if args.username:
        params["username"] = args.username
    if args.password_file is not None:
        params["password"] = args.password_file
    elif args.password_stdin:
        import getpass

        params["password"] = getpass.getpass() if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    return params


def run_install(client: ControlClient, args: argparse.Namespace) -> int:
    params = {"ee_name": args.ee, "uri": args.url, **_credentials(args), **_signature(args)}
    if args.uuid:
        params["uuid"] = args.uuid
    return _long(client, args, "du.install", params)


def run_update(client: ControlClient, args: argparse.Namespace) -> int:
    params = {"uuid": args.id, **_credentials(args), **_signature(args)}
    if args.url:
        params["uri"] = args.url
    return _long(client, args, "du.update", params)


def _signature(args: argparse.Namespace) -> dict[str, str]:
    return {"signature": args.signature} if args.signature else {}


def run_uninstall(client: ControlClient, args: argparse.Namespace) -> int:
    return _long(client, args, "du.uninstall", {"uuid": args.id})


def run_eu(method: str) -> Callable[..., int]:
    """eu.start / eu.stop: answered at once, or with --wait once the EU is Active / Idle."""

    def run(client: ControlClient, args: argparse.Namespace) -> int:
        return _long(client, args, method, {"uid": args.id})

    return run


def run_save_state(client: Caller, args: argparse.Namespace) -> int:
    return _print_result(args, client.call("dsm.save_state"))


def run_get(client: Caller, args: argparse.Namespace) -> int:
    # Asked for by object ({object path: {name: text}}): half the bytes of {path: text}, and
    # the daemon makes it in slices between its other work. A daemon that predates "objects" answers flat.
    values = client.call("get", {"paths": args.paths, "max_depth": args.max_depth, "objects": True})
    if args.json:
        print_json(dict(_flat(values)))
    else:
        sys.stdout.write("".join(_lines(values)))
    return EXIT_OK


def _lines(values: Mapping[str, Any]) -> Iterator[str]:
    """``path = text`` lines of either answer of ``get``, an object's at once (one f-string
    per value in a list comprehension: the cheapest way Python has to make them)."""
    for path, value in values.items():
        if isinstance(value, dict):
            yield "".join([f"{path}{name} = {text}\n" for name, text in value.items()])
        else:
            yield f"{path} = {show(value)}\n"


def _flat(values: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(parameter path, text)`` of either answer of ``get``."""
    for path, value in values.items():
        if isinstance(value, dict):
            yield from zip(map(path.__add__, value), value.values(), strict=True)
        else:
            yield path, show(value)


def run_set(client: Caller, args: argparse.Namespace) -> int:
    result = client.call("set", {"values": dict(args.assignments), "allow_partial": args.allow_partial})
    if args.json:
        print_json(result)
    else:
        print_pairs(result["updated"])
    for error in result["errors"]:
        print(f"dsmcli: {DaemonError('', error['fault']).describe()}", file=sys.stderr)
    return EXIT_FAULT if result["errors"] else EXIT_OK


def run_add(client: Caller, args: argparse.Namespace) -> int:
    return _print_rows(args, client.call("add", {"path": args.path, "params": dict(args.assignments)}))


def run_delete(client: Caller, args: argparse.Namespace) -> int:
    return _print_result(args, client.call("delete", {"paths": args.paths})["deleted"])


def run_operate(client: ControlClient, args: argparse.Namespace) -> int:
    return _long(client, args, "operate", {"command": args.command, "args": dict(args.assignments)})


def run_supported(client: Caller, args: argparse.Namespace) -> int:
    found = client.call("supported", {"paths": args.paths, "first_level_only": args.first_level_only})
    if args.json:
        print_json(found)
        return EXIT_OK
    for objects in found.values():
        for obj in objects:
            kind = "table" if obj["multi_instance"] else "object"
            access = "add/delete" if obj["access"] == "OBJ_ADD_DELETE" else "read-only"
            keys = " | ".join(",".join(k) for k in obj["unique_keys"])
            print(f"{obj['path']}  {kind}, {access}" + (f", keys {keys}" if keys else ""))
            for param in obj["params"]:
                writable = "read-write" if param["access"] == "PARAM_READ_WRITE" else "read-only"
                print(f"  {param['name']}  {param['type']}  {writable}")
            for command in obj["commands"]:
                mode = "async" if command["type"] == "CMD_ASYNC" else "sync"
                inputs = ",".join(p["name"] for p in command["inputs"])
                outputs = ",".join(p["name"] for p in command["outputs"])
                print(f"  {command['name']}  {mode}  in: {inputs or '-'}  out: {outputs or '-'}")
            for event in obj["events"]:
                print(f"  {event['name']}  event  args: {','.join(p['name'] for p in event['args']) or '-'}")
    return EXIT_OK


def run_instances(client: Caller, args: argparse.Namespace) -> int:
    return _print_rows(args, client.call("instances", {"paths": args.paths, "first_level_only": args.first_level_only}))


def _print_rows(args: argparse.Namespace, rows: list[Mapping[str, Any]]) -> int:
    """Rows as answered by add and instances: ``path  key=value ...`` lines."""
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            print(f"{row['path']}  {show(row['unique_keys'])}".rstrip())
    return EXIT_OK


def run_logs(client: Caller, args: argparse.Namespace, poll: float = 0.5) -> int:
    """The EU's output, oldest backup first; with --follow, new output as it comes."""
    cursor = None
    try:
        while True:
            chunk = client.call("eu.logs", {"uid": args.id, "cursor": cursor})
            sys.stdout.write(chunk["data"])
            sys.stdout.flush()
            cursor = chunk["cursor"]
            if chunk["more"]:
                continue
            if not args.follow:
                return EXIT_OK
            time.sleep(poll)
    except KeyboardInterrupt:
        return EXIT_OK


def run_events(client: ControlClient, args: argparse.Namespace) -> int:
    def subscribed() -> None:
        print(f"following notifications under {args.prefix or 'Device.'} (Ctrl-C to stop)", file=sys.stderr)

    try:
        for event in client.events(args.prefix, subscribed):
            print(json.dumps(event, ensure_ascii=False) if args.json else event_line(event), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    raise ClientError("the daemon closed the notification stream")


def event_line(event: Mapping[str, Any]) -> str:
    line = f"{event.get('kind')} {event.get('path')}"
    if "value" in event:
        line += f" = {show(event['value'])}"
    if event.get("args"):
        line += " " + show(event["args"])
    if event.get("request_id"):
        line += f" request={event['request_id']}"
    if event.get("fault"):
        line += f" fault={event['fault'].get('code')} {event['fault'].get('message', '')}"
    return line


# == command line =====================================================================================


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read the password file: {exc.strerror}") from None


class _Arguments(Protocol):
    """What setting a verb up uses of an argument group."""

    def add_argument(self, *args: Any, **kwargs: Any) -> object: ...


class _VerbParser(_Arguments, Protocol):
    """What setting a verb up uses of its parser: argparse's, or :class:`_Skipped`."""

    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> _Arguments: ...


class _Skipped:
    """Stands for the parser of a verb left out (see :func:`build_parser`)."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> _Skipped:
        return self


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb of a command line (the first word that is no option nor --socket's value)."""
    words = iter(argv)
    for word in words:
        if word == "--socket":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``only``, with that verb's sub-parser alone: making
    all of them is most of dsmcli's start-up after the imports."""
    parser, made = _parser(only)
    if only is not None and only not in made:
        parser, _ = _parser(None)  # an unknown verb: the full parser says which there are
    return parser


def _parser(only: str | None) -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser (every verb's sub-parser, or ``only``'s) and the verbs it has."""
    made: set[str] = set()
    parser = argparse.ArgumentParser(prog="dsmcli", description="Talk to the dsm daemon over its control socket.")
    parser.add_argument("--socket", default=default_socket_path(), help="control socket (env DSM_SOCKET)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON result")
    parser.add_argument("--local", action="store_true", help="no daemon: read a fresh in-process data model")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, run: Callable[..., int], help_text: str) -> _VerbParser:
        if only is not None and name != only:
            return _Skipped()
        made.add(name)
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    def identified(name: str, run: Callable[..., int], help_text: str, what: str) -> _VerbParser:
        sub = verb(name, run, help_text)
        sub.add_argument("id", metavar="ID", help=f"{what}, instance number or Alias")
        return sub

    def signed(sub: _VerbParser) -> None:
        sub.add_argument("--signature", metavar="URL", help="the archive's detached CMS signature (URL or data: URI)")

    def waiting(sub: _VerbParser) -> None:
        sub.add_argument("--wait", action="store_true", help="follow the request to its end, showing progress")

    def credentials(sub: _VerbParser) -> None:
        sub.add_argument("--username", help="user name for the download server")
        password = sub.add_mutually_exclusive_group()
        password.add_argument("--password-file", type=_password_file, metavar="FILE", help="read the password here")
        password.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    for name, (help_text, _, _) in LISTS.items():
        verb(name, _list(name), help_text)
    identified("ee.detail", _by_id("ee.detail", "name"), "show an execution environment", "EE name")
    identified("du.detail", _by_id("du.detail", "uuid"), "show a deployment unit", "DU UUID")
    install = verb("du.install", run_install, "install a deployment unit")
    install.add_argument("ee", metavar="EE", help="execution environment name, instance number or Alias")
    install.add_argument("url", metavar="URL")
    install.add_argument("--uuid", help="the DU's UUID (default: derived by the daemon)")
    credentials(install)
    signed(install)
    waiting(install)
    update = identified("du.update", run_update, "update a deployment unit", "DU UUID")
    update.add_argument("url", metavar="URL", nargs="?", help="new URL (default: the DU's own)")
    credentials(update)
    signed(update)
    waiting(update)
    waiting(identified("du.uninstall", run_uninstall, "uninstall a deployment unit", "DU UUID"))
    identified("eu.detail", _by_id("eu.detail", "uid"), "show an execution unit", "EUID")
    waiting(identified("eu.start", run_eu("eu.start"), "start an execution unit", "EUID"))
    waiting(identified("eu.stop", run_eu("eu.stop"), "stop an execution unit", "EUID"))
    logs = identified("eu.logs", run_logs, "print an execution unit's output", "EUID")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new output until Ctrl-C")
    verb("dsm.save_state", run_save_state, "save the daemon's state (it is journaled continuously)")

    get = verb("get", run_get, "read parameters (object paths give everything below)")
    get.add_argument("paths", nargs="+", metavar="PATH")
    get.add_argument("--max-depth", type=int, default=0, help="levels of sub-objects (0: all)")
    set_ = verb("set", run_set, "write parameters")
    set_.add_argument("assignments", nargs="+", type=_assignment, metavar="PATH=VALUE")
    set_.add_argument("--allow-partial", action="store_true", help="apply what can be applied")
    add = verb("add", run_add, "add a row to a table")
    add.add_argument("path", metavar="PATH")
    add.add_argument("assignments", nargs="*", type=_assignment, metavar="NAME=VALUE")
    delete = verb("delete", run_delete, "delete rows")
    delete.add_argument("paths", nargs="+", metavar="PATH")
    operate = verb("operate", run_operate, "run a command ('Device.X.Cmd()')")
    operate.add_argument("command", metavar="COMMAND")
    operate.add_argument("assignments", nargs="*", type=_assignment, metavar="NAME=VALUE")
    waiting(operate)
    for name, run, help_text in (
        ("supported", run_supported, "show the supported data model"),
        ("instances", run_instances, "list object instances and their unique keys"),
    ):
        sub = verb(name, run, help_text)
        sub.add_argument("paths", nargs="+", metavar="PATH")
        sub.add_argument("--first-level-only", action="store_true")
    events = verb("events", run_events, "follow notifications until Ctrl-C")
    events.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    return parser, made


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(verb_of(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if args.local and args.verb not in LOCAL_VERBS:
        parser.error(f"--local serves only {', '.join(LOCAL_VERBS)}")
    try:
        client: Caller = LocalModel() if args.local else ControlClient(args.socket)
        run: Callable[[Caller, argparse.Namespace], int] = args.run  # set by verb()
        return run(client, args)
    except DaemonError as error:
        print(f"dsmcli: {error.describe()}", file=sys.stderr)
        return EXIT_FAULT
    except Unreachable as error:
        print(f"dsmcli: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ClientError as error:
        print(f"dsmcli: {error}", file=sys.stderr)
        return EXIT_FAULT
    except KeyboardInterrupt:
        return 130


def run() -> NoReturn:
    """The ``dsmcli`` program: :func:`main`, then an exit without the interpreter's teardown.

    Freeing every module and object at exit costs a short command a sixth of its time
    (6-20 ms here) and frees nothing the kernel would not; dsmcli registers no exit
    handlers, so flushing the two streams is all a normal exit would still do. A reader
    that leaves early (``dsmcli get Device. | head``) ends it quietly with the status of a
    program killed by SIGPIPE, as it ends other tools.
    """
    try:
        code = main()
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = EXIT_READER_GONE
    except OSError as error:  # stdout on a full disk, say: one line, not a traceback
        print(f"dsmcli: {error}", file=sys.stderr)
        code = EXIT_FAULT
    os._exit(code)


if __name__ == "__main__":
    run()
