"""A restarted rtrouted forgets every element; the provider's watchdog notices and
registers the whole tree again (rows included) without the daemon restarting."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from dsm_tr181.buses import rbus_ffi
from dsm_tr181.buses.rbus import RbusProvider
from dsm_tr181.schema import load_schema
from dsm_tr181.tree.datamodel import DataModel
from tests.integration.test_rbus_provider import SM
from tests.support.loopthread import LoopThread
from tests.support.rtrouted import BrokerBusy, RbusTools, run_rbuscli, running_broker

pytestmark = [pytest.mark.rbus, pytest.mark.integration]


def _failing_once(load: Callable[[str], rbus_ffi.Rbus]) -> Callable[[str], rbus_ffi.Rbus]:
    calls = 0

    def failing(path: str) -> rbus_ffi.Rbus:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected")
        return load(path)

    return failing


def _until(check, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("first_try_fails", [False, True], ids=["", "after-an-unexpected-failure"])
def test_the_tree_is_registered_again_after_a_broker_restart(
    tools: RbusTools, monkeypatch: pytest.MonkeyPatch, first_try_fails: bool
) -> None:
    loop = LoopThread()
    dm = DataModel(load_schema())
    loop.call(lambda: dm.add_row(SM + "ExecEnv.", {"Name": "main", "Enable": True, "Status": "Up"}))
    section = {"library": str(tools.library), "component": "dsm-watchdog", "watchdog_interval": 0.5}
    provider = RbusProvider.create(dm, section, loop.loop)
    name = SM + "ExecEnv.1.Name"
    try:
        with running_broker(tools):
            loop.wait(provider.start())
            assert run_rbuscli(tools, "get", name).values() == {name: "main"}
            if first_try_fails:  # the watchdog must outlive an error it does not expect
                monkeypatch.setattr(rbus_ffi, "load", _failing_once(rbus_ffi.load))
        with running_broker(tools):  # a new broker knows nothing of us
            assert _until(lambda: run_rbuscli(tools, "get", name).values() == {name: "main"}, timeout=20)
            loop.call(lambda: dm.add_row(SM + "ExecEnv.", {"Name": "second"}))  # rows still followed
            loop.wait(provider.synced())
            second = SM + "ExecEnv.2.Name"
            assert run_rbuscli(tools, "get", second).values() == {second: "second"}
            loop.wait(provider.close())
    except BrokerBusy as exc:
        pytest.skip(str(exc))
    finally:
        loop.wait(provider.close())
        loop.stop()
