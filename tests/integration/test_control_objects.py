"""``get`` by object on the control socket: what dsmcli asks for, against the flat answer
old clients get, over a real ControlServer; and dsmcli's light start-up."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.tree_bench import build
from dsm_tr181.buses.bulk_json import BulkEncoder, snapshot
from dsm_tr181.buses.control_socket import ControlServer
from dsm_tr181.control_client import ControlClient, RawJson, encode_frame, reply_frame

pytestmark = pytest.mark.integration

SM = "Device.SoftwareModules."


@pytest.fixture(scope="module")
def served() -> Iterator[Path]:
    """A tree of 20 DUs (60 EUs) behind a ControlServer on a loop in a thread."""
    directory = Path(tempfile.mkdtemp(prefix="dsm-obj-"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> ControlServer:
        dm = build(20)
        dm.update(SM + "ExecutionUnit.2.", {"ExecutionFaultMessage": 'nul\x00 "quoted" é'})
        server = ControlServer(dm, directory / "dsm.sock")
        await server.start()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    yield directory / "dsm.sock"
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    shutil.rmtree(directory)


def test_objects_hold_the_flat_answers_values(served: Path) -> None:
    client = ControlClient(str(served))
    for paths in ([SM], [SM + "ExecutionUnit.*.Status", SM + "DeploymentUnit.3."], [SM + "ExecEnv.1.Name"]):
        flat = client.call("get", {"paths": paths})
        objects = client.call("get", {"paths": paths, "objects": True})
        assert all(isinstance(params, dict) for params in objects.values())
        flattened = {path + name: text for path, params in objects.items() for name, text in params.items()}
        # The one difference: D-Bus strings and the objects form carry no NUL.
        assert flattened == {k: v.replace("\x00", "\ufffd") for k, v in flat.items()}
    assert len(flat) == 1


def test_objects_are_smaller_on_the_wire(served: Path) -> None:
    sizes = {}
    for objects in (False, True):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(served))
            sock.sendall(encode_frame({"method": "get", "id": 1, "params": {"paths": [SM], "objects": objects}}))
            sizes[objects] = len(b"".join(iter(lambda: sock.recv(1 << 16), b"")))
    assert sizes[True] < 0.7 * sizes[False]


def test_raw_json_reply_frames_as_an_encoded_one() -> None:
    result: dict[str, Any] = {"a.": {"b": "é"}, "c.": {}}
    text = json.dumps(result).encode()
    raw = RawJson([text[:5], text[5:]])
    frame = b"".join(reply_frame("x", raw))
    assert json.loads(frame[4:]) == json.loads(encode_frame({"id": "x", "result": result})[4:])
    assert int.from_bytes(frame[:4], sys.byteorder) == len(frame) - 4
    assert raw.pieces == []  # handed over, not kept while it is sent
    assert reply_frame(7, [1]) == [encode_frame({"id": 7, "result": [1]})]


def test_the_document_in_pieces_is_the_document() -> None:
    dm = build(300)
    objects = snapshot([obj for result in dm.get([SM]) for obj in result.resolved])
    pieces = BulkEncoder().pieces(objects)
    assert len(pieces) > 1 and max(map(len, pieces)) < 1 << 20
    document = json.loads(b"".join(pieces))
    assert document == {obj.path: obj.text() for result in dm.get([SM]) for obj in result.resolved}


def test_dsmcli_get_prints_every_value(served: Path) -> None:
    env = {**os.environ, "DSM_SOCKET": str(served)}
    command = [sys.executable, "-m", "dsm_tr181.cli", "get", SM]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=True).stdout
    flat = ControlClient(str(served)).call("get", {"paths": [SM]})
    assert out.splitlines() == [f"{k} = {v.replace(chr(0), chr(0xFFFD))}" for k, v in flat.items()]


def test_dsmcli_exits_with_its_output_flushed_and_no_interpreter_teardown(served: Path, tmp_path: Path) -> None:
    # An exit handler stands for the teardown: dsmcli's exit must not reach it, yet lose no output.
    probe = (
        "import atexit, sys, dsm_tr181.cli as cli; atexit.register(print, 'torn down', file=sys.stderr); "
        "sys.argv[1:] = {argv!r}; cli.run()"
    )
    env = {**os.environ, "DSM_SOCKET": str(served)}
    done = subprocess.run([sys.executable, "-c", probe.format(argv=["get", SM])], env=env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    flat = ControlClient(str(served)).call("get", {"paths": [SM]})
    assert (done.returncode, done.stderr) == (0, "")
    assert len(done.stdout.splitlines()) == len(flat) > 100
    env["DSM_SOCKET"] = str(tmp_path / "nobody.sock")
    done = subprocess.run([sys.executable, "-c", probe.format(argv=["ee.list"])], env=env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.returncode == 3 and done.stderr.startswith("dsmcli: cannot reach the dsm daemon")
    assert "torn down" not in done.stderr


def test_dsmcli_ends_quietly_when_its_reader_has_left(served: Path) -> None:
    # As after `dsmcli get ... | head -1` once head has exited: the next write finds no reader.
    env = {**os.environ, "DSM_SOCKET": str(served)}
    read_end, write_end = os.pipe()
    os.close(read_end)
    command = [sys.executable, "-m", "dsm_tr181.cli", "get", SM]
    with subprocess.Popen(command, env=env, stdout=write_end, stderr=subprocess.PIPE) as cli:
        os.close(write_end)
        assert cli.wait(timeout=30) == 128 + 13
        assert cli.stderr is not None and cli.stderr.read() == b""


def test_dsmcli_says_when_its_output_cannot_be_written(served: Path) -> None:
    env = {**os.environ, "DSM_SOCKET": str(served)}
    with open("/dev/full", "wb") as full:  # every write: ENOSPC
        done = subprocess.run([sys.executable, "-m", "dsm_tr181.cli", "get", SM], env=env, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=30)  # fmt: skip
    assert (done.returncode, done.stderr) == (1, "dsmcli: [Errno 28] No space left on device\n")


def test_dsmcli_imports_only_what_a_socket_client_needs() -> None:
    heavy = ["asyncio", "typing", "lxml", "cryptography", "dsm_tr181.schema", "dsm_tr181.tree", "logging", "gi"]
    probe = f"import sys, dsm_tr181.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "[]"
