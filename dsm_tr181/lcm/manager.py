"""The lifecycle manager: Device.SoftwareModules. behaviour on top of the DataModel.

It owns the LCM state (records of ExecEnvs, DUs, EUs and in-flight operations), wires
the command handlers and parameter hooks into the tree, and keeps the store, the tree
and the runtimes consistent. The three parts live in their own modules:
:mod:`.execenvs`, :mod:`.deployments` and :mod:`.executions`; start-up recovery is
in :mod:`.recovery`. Everything runs on the daemon's asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm import monitoring
from dsm_tr181.lcm.appdata import AppData
from dsm_tr181.lcm.availability import Availability
from dsm_tr181.lcm.certificates import Certificates
from dsm_tr181.lcm.confinement import Confinement
from dsm_tr181.lcm.deployments import Deployments
from dsm_tr181.lcm.execenvs import ExecEnvs
from dsm_tr181.lcm.executions import Executions
from dsm_tr181.lcm.networking import Networking
from dsm_tr181.lcm.outcomes import Outcomes
from dsm_tr181.lcm.ports import LayerProgress, Network, Packager, Runtime, Sealer, TrustedCertificate, Volumes
from dsm_tr181.lcm.records import DeploymentUnitRecord, PendingEventRecord, Record, Store
from dsm_tr181.lcm.recovery import adopt_containers, recover
from dsm_tr181.lcm.settings import LcmSettings
from dsm_tr181.lcm.states import DuOutcome, Operation
from dsm_tr181.lcm.tables import CERT_TABLE, DU_TABLE, EE_TABLE, EU_TABLE, LOG_TABLE, now
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.notifications import Kind, Notification

log = logging.getLogger(__name__)

# DUStateChange!.UUID of an install that failed before its package named the DU (RFC 4122 nil UUID).
NIL_UUID = "00000000-0000-0000-0000-000000000000"


class Lcm:
    def __init__(
        self,
        dm: DataModel,
        store: Store,
        packager: Packager,
        runtimes: Mapping[str, Runtime],
        settings: LcmSettings,
        sealer: Sealer,
        certificates: Sequence[TrustedCertificate] = (),
        volumes: Volumes | None = None,
        networks: Mapping[str, Network] | None = None,
    ) -> None:
        """``runtimes``: one runtime per ExecEnv name; ``certificates``: the trust store;
        ``volumes``: where application data volumes live (None: ApplicationData refused);
        ``networks``: the bridged network of each ExecEnv whose ``network`` is bridged."""
        self.dm = dm
        self.store = store
        self.packager = packager
        self.runtimes = dict(runtimes)
        self.settings = settings
        self.sealer = sealer
        self.operations = asyncio.Semaphore(settings.max_parallel_operations)  # installs and updates
        # Uninstalls download nothing: slots of their own, so slow downloads never hold them up.
        self.removals = asyncio.Semaphore(settings.max_parallel_operations)
        self.certificates = Certificates(self, certificates)
        self.availability = Availability(self)
        self.execenvs = ExecEnvs(self)
        self.confinement = Confinement(self)
        self.appdata = AppData(self, volumes)
        self.networking = Networking(self, networks or {})
        self.executions = Executions(self)
        self.deployments = Deployments(self)
        self.outcomes = Outcomes(self)
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False  # set by drain(): no new Install/Update/Uninstall
        self._running: set[asyncio.Task[Any]] = set()  # operations started or queued

    async def start(self) -> None:
        """Restore persisted state, recover from an interrupted run, serve the commands."""
        for directory in (self.settings.bundle_dir, self.settings.log_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.certificates.install_hooks()
        self.execenvs.install_hooks()
        self.executions.install_hooks()
        self.deployments.install_hooks()
        self.appdata.install_hooks()
        for runtime in self.runtimes.values():
            runtime.watch(self.executions.on_exit)
        self.availability.watch()
        snapshot = self.store.load()
        self.outcomes.restore(snapshot.of(PendingEventRecord))
        await recover(self, snapshot)
        self.spawn(monitoring.sample_disk_forever(self), "disk-sampler")

    def check_open(self) -> None:
        """Refuse new operations once shutdown has begun."""
        if self.closing:
            raise Fault(FaultCode.REQUEST_DENIED, "the deployment and state manager is shutting down")

    @asynccontextmanager
    async def operation(self, removal: bool = False) -> AsyncIterator[None]:
        """Hold one operation slot (a removal's own kind of slot for an uninstall); drain() waits for
        (then cancels) whoever is in here or queued for it."""
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            async with self.removals if removal else self.operations:
                yield
        finally:
            self._running.discard(task)

    async def drain(self) -> None:
        """At shutdown: accept no new operation, give running ones ``shutdown_timeout`` to end, cancel the rest.

        A cancelled operation still ends properly (rolled back, its DUStateChange! sent)
        while the store is open; the buses close only after this."""
        self.closing = True
        pending = set(self._running)
        if not pending:
            return
        log.info("waiting up to %g s for %d running operations", self.settings.shutdown_timeout, len(pending))
        _, pending = await asyncio.wait(pending, timeout=self.settings.shutdown_timeout)
        for task in pending:
            log.warning("cancelling operation %s at shutdown", task.get_name())
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self.executions.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runtime in self.runtimes.values():
            await runtime.close()
        self.store.close()

    async def reconcile_runtime(self, runtime: Runtime) -> None:
        """A runtime is back: adopt what it runs (RuntimeUnavailable if it is not back)."""
        await adopt_containers(self, runtime)

    # -- shared helpers ---------------------------------------------------------------------

    def commit(
        self,
        put: Sequence[Record] | None = None,
        delete: Sequence[Record] | None = None,
        *,
        keep_changes: bool = False,
        durable: bool = True,
    ) -> None:
        """Persist records together with the instance counters of every table.

        When the store refuses (a Fault: full disk), the records in ``put`` get back what
        the store holds, so that the caller's change is undone everywhere, unless
        ``keep_changes`` (an operation ending in failure still ends: recovery at the next
        start finishes what the journal then says). ``durable``: see the Store protocol."""
        tables = (EE_TABLE, DU_TABLE, EU_TABLE, LOG_TABLE, CERT_TABLE)
        try:
            counters = {t: self.dm.table(t).next_instance for t in tables}
            self.store.commit(list(put or ()), list(delete or ()), counters, durable=durable)
        except Fault:
            if put and not keep_changes:
                self._restore(put)
            raise

    def _restore(self, records: Sequence[Record]) -> None:
        stored = self.store.load().records
        for record in records:
            before = stored.get(record.KIND, {}).get(record.key())
            if before is not None:
                for item in fields(before):  # type: ignore[arg-type]  # every record is a dataclass
                    setattr(record, item.name, getattr(before, item.name))

    def spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        """Run a background coroutine, keep a reference, log what it raises."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s failed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def eu_confinement(self, eu_instance: int) -> dict[str, object]:
        """What EU ``eu_instance`` runs with (capabilities, namespaces, seccomp, ..., and its
        network: mode, address, port mappings — which TR-181 would show as
        ``Device.NAT.PortMapping`` rows, not served here)."""
        eu = self.executions.units[eu_instance].record
        network: dict[str, object] = {"mode": self.networking.mode(eu)}
        if eu.address:
            network["address"] = eu.address
        if eu.port_mappings and network["mode"] == "Bridged":
            network["port_mappings"] = [
                f"{m['Protocol']} {m['ExternalPort']} -> {m['InternalPort']}" for m in eu.port_mappings
            ]
        return {**self.confinement.summary(eu, self.deployments.records[eu.du]), "network": network}

    def eu_log(self, eu_instance: int) -> tuple[Path, int]:
        """EU ``eu_instance``'s log file and how many backups of it are kept."""
        return Path(self.executions.units[eu_instance].record.log_file), self.settings.eu_log_backups

    def eu_processes(self, eu_instance: int) -> list[dict[str, Value]]:
        """PID and command line of EU ``eu_instance``'s processes (sampled now, or within usage_interval)."""
        return monitoring.processes(self.executions.usage(self.executions.units[eu_instance]).pids)

    def bundle_root(self, du_instance: int) -> Path:
        return self.settings.bundle_dir / str(du_instance)

    def du_path(self, du: DeploymentUnitRecord) -> str:
        return f"{DU_TABLE}{du.instance}"

    def progress(
        self,
        du: DeploymentUnitRecord,
        request_id: str,
        stage: str,
        done: int = 0,
        total: int = -1,
        layer: LayerProgress | None = None,
    ) -> None:
        """A Progress notification; for an image, with the layer under way (``layer`` "i/n sha256:…",
        ``layer_done``/``layer_total`` bytes, ``layer_stored`` when it was in the layer store)."""
        args: dict[str, Value] = {"stage": stage, "done": done, "total": total}
        if layer is not None:
            args |= {
                "layer": f"{layer.index}/{layer.count} {layer.digest}",
                "layer_done": layer.done,
                "layer_total": layer.total,
                "layer_stored": layer.stored,
            }
        self.dm.notifications.publish(
            Notification(Kind.PROGRESS, self.du_path(du) + ".", args=args, request_id=request_id)
        )

    def du_state_change(
        self,
        du: DeploymentUnitRecord,
        operation: Operation,
        state: DuOutcome,
        started: datetime,
        fault: Fault | None = None,
        request_id: str = "",
    ) -> None:
        """Publish DUStateChange! — for every Install, Update and Uninstall, success or failure
        (kept in the store until someone listens: lcm.outcomes); ``request_id``: the command it
        concludes, for local clients waiting on it (not an argument of the event)."""
        self.outcomes.deliver(self.outcome(du, operation, state, started, fault), request_id=request_id)

    def outcome(
        self,
        du: DeploymentUnitRecord,
        operation: Operation,
        state: DuOutcome,
        started: datetime,
        fault: Fault | None = None,
    ) -> PendingEventRecord:
        """The DUStateChange! of an operation, ready to commit with it and deliver after.

        TR-181 2.19.1 DUStateChange! arguments: ``DeploymentUnitRef`` is empty when the install
        Failed ("a DU instance MUST NOT be created in the Data Model"); ``ExecutionUnitRefList``
        lists the EUs created (Install), associated (Update) or "removed from the device due to
        the DU being removed" (Uninstall); ``Resolved`` is true once Installed and, "in the case
        of a successful Uninstall, this value is meaningless and should be true".

        Also logged, whenever it is delivered."""
        done = state is not DuOutcome.FAILED
        eus = tuple(f"{EU_TABLE}{n}" for n in du.eus) if done else ()
        outcome = f"fault {fault.code.usp}: {fault.message}" if fault else "no fault"
        uuid = du.uuid or NIL_UUID
        log.info("DUStateChange! %s of %s (UUID %s): %s, %s", operation, self.du_path(du), uuid, state, outcome)
        return self.outcomes.record(
            {
                "UUID": uuid,
                "DeploymentUnitRef": self.du_path(du) if done else "",
                "Version": du.version,
                "CurrentState": state,
                "Resolved": done,
                "ExecutionUnitRefList": eus,
                "StartTime": started,
                "CompleteTime": now(),
                "OperationPerformed": operation,
                "Fault.FaultCode": fault.code.usp if fault else 0,
                "Fault.FaultString": (fault.message[:256] if fault else ""),
            },
        )
