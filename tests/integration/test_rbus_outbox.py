"""The rbus outbox on the real librbus: row registrations run on librbus's callback thread
(reached through a served parameter, no private method), so a consumer's partial gets
never walk a row freed under them, however fast rows come and go (librbus expands a
partial get without a lock; unregistering a row from another thread crashed it)."""

from __future__ import annotations

import threading
import time

import pytest

from dsm_tr181.schema.loader import load_documents
from dsm_tr181.tree.datamodel import DataModel
from tests.contract.buses import MODEL, _serve_rbus
from tests.support.loopthread import LoopThread

pytestmark = [pytest.mark.rbus, pytest.mark.integration]

ITEM = "Device.Test.Item."


def test_partial_gets_while_rows_come_and_go() -> None:
    loop = LoopThread()
    try:
        dm = loop.call(lambda: DataModel(load_documents([MODEL])))
        with _serve_rbus(dm, loop) as (client, synced):
            consumer = client._consumer
            until = time.monotonic() + 3
            rounds = [0]

            def churn() -> None:
                while time.monotonic() < until:
                    rows = loop.call(lambda: [dm.add_row(ITEM, {"Name": f"r{i}"}).path for i in range(4)])
                    loop.call(lambda rows=rows: dm.delete(rows))
                    rounds[0] += 1

            worker = threading.Thread(target=churn)
            worker.start()
            gets = 0
            while time.monotonic() < until:
                code, values = consumer.get(["Device.Test."])
                assert code == 0 and all(name.startswith("Device.Test.") for name in values)
                gets += 1
            worker.join()
            synced()
            assert rounds[0] > 10 and gets > 2
            assert consumer.row_names(ITEM) == (0, [])  # the last rows went with the tree's
            assert consumer.get(["Device.Test.Level"])[0] == 0  # the provider still answers
    finally:
        loop.stop()
