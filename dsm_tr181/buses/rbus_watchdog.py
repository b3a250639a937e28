"""When the rbus provider must register again: the watchdog's rule.

rtrouted forgets every provider's elements when it restarts, and librbus tells the provider
nothing. The watchdog therefore reads one of our own properties through the broker. But a
read can also fail because we are slow — a consumer's whole-tree read keeps librbus busy in
our handlers for seconds — and registering again then closes a handle librbus is still
using (the daemon crashed so). So "slow" and "forgotten" are told apart by what the broker
says, never by how long a call took:

* a request the broker routed to us recently, or one running now, proves it knows us;
* only a read answered "no such destination/element/component" means forgotten; a timeout
  or any other error means busy;
* even then the handle is closed only once no handler has run for a quiet moment.
"""

from __future__ import annotations

import enum

from dsm_tr181.buses.rbus_ffi import RbusError

FORGOTTEN = frozenset({RbusError.DESTINATION_NOT_FOUND, RbusError.ELEMENT_DOES_NOT_EXIST,
                       RbusError.COMPONENT_DOES_NOT_EXIST})  # fmt: skip
QUIET_BEFORE_CLOSE = 1.0  # seconds without a running handler before the handle is closed


class Verdict(enum.Enum):
    ALIVE = "alive"  # the broker routes to us: nothing to do
    PROBE = "probe"  # nothing routed to us lately: read our own property through the broker
    BUSY = "busy"  # the probe failed, but not because the broker forgot us
    FORGOTTEN = "forgotten"  # register again (once quiet)


def before_probe(quiet_for: float, interval: float) -> Verdict:
    """A handler that ran within half an interval proves the broker routes to us."""
    return Verdict.ALIVE if quiet_for < interval / 2 else Verdict.PROBE


def after_probe(error: int | None) -> Verdict:
    if error is None:
        return Verdict.ALIVE
    return Verdict.FORGOTTEN if error in FORGOTTEN else Verdict.BUSY
