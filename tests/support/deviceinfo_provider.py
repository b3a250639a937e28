"""STAND-IN FOR RDK-B's PandM, for tests only: the three ``Device.DeviceInfo.`` parameters RDK's
USP agent reads on rbus before it starts (``X_RDKCENTRAL-COM_LastRebootReason``,
``ManufacturerOUI``, ``SerialNumber``), read-only, registered through dsm-tr181's own cffi
layer. Run as ``python -m tests.support.deviceinfo_provider LIBRBUS``; prints ``ready`` once
registered and serves until SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading

from dsm_tr181.buses import rbus_ffi

VALUES = {
    "Device.DeviceInfo.X_RDKCENTRAL-COM_LastRebootReason": "power-on",
    "Device.DeviceInfo.ManufacturerOUI": "00D09E",
    "Device.DeviceInfo.SerialNumber": "DSMTEST0001",
}


def main(library: str) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with rbus_ffi.Handle(rbus_ffi.load(library), "pandm-standin") as handle:
        handle.register([rbus_ffi.Property(name, "string", lambda n: VALUES[n]) for name in VALUES])
        print("ready", flush=True)
        while not stop.wait(3600):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
