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
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from dsm_tr181.errors import Fault
from dsm_tr181.lcm.availability import Availability
from dsm_tr181.lcm.certificates import Certificates
from dsm_tr181.lcm.confinement import Confinement
from dsm_tr181.lcm.deployments import Deployments
from dsm_tr181.lcm.execenvs import ExecEnvs
from dsm_tr181.lcm.executions import Executions
from dsm_tr181.lcm.ports import Packager, Runtime, Sealer, TrustedCertificate
from dsm_tr181.lcm.records import DeploymentUnitRecord, Record, Store
from dsm_tr181.lcm.recovery import adopt_containers, recover
from dsm_tr181.lcm.settings import LcmSettings
from dsm_tr181.lcm.tables import CERT_TABLE, DU_STATE_CHANGE, DU_TABLE, EE_TABLE, EU_TABLE, LOG_TABLE, now
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.notifications import Kind, Notification

log = logging.getLogger(__name__)


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
    ) -> None:
        """``runtimes``: one runtime per ExecEnv name; ``certificates``: the trust store."""
        self.dm = dm
        self.store = store
        self.packager = packager
        self.runtimes = dict(runtimes)
        self.settings = settings
        self.sealer = sealer
        self.operations = asyncio.Semaphore(settings.max_parallel_operations)
        self.certificates = Certificates(self, certificates)
        self.availability = Availability(self)
        self.execenvs = ExecEnvs(self)
        self.confinement = Confinement(self)
        self.executions = Executions(self)
        self.deployments = Deployments(self)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Restore persisted state, recover from an interrupted run, serve the commands."""
        for directory in (self.settings.bundle_dir, self.settings.log_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.certificates.install_hooks()
        self.execenvs.install_hooks()
        self.executions.install_hooks()
        self.deployments.install_hooks()
        for runtime in self.runtimes.values():
            runtime.watch(self.executions.on_exit)
        self.availability.watch()
        await recover(self, self.store.load())
        self.executions.start_sampler()

    async def close(self) -> None:
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

    def commit(self, put: list[Record] | None = None, delete: list[Record] | None = None) -> None:
        """Persist records together with the instance counters of every table."""
        tables = (EE_TABLE, DU_TABLE, EU_TABLE, LOG_TABLE, CERT_TABLE)
        self.store.commit(put, delete, {t: self.dm.table(t).next_instance for t in tables})

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
        """What EU ``eu_instance`` runs with (capabilities, namespaces, seccomp, ...)."""
        eu = self.executions.units[eu_instance].record
        return self.confinement.summary(eu, self.deployments.records[eu.du])

    def bundle_root(self, du_instance: int) -> Path:
        return self.settings.bundle_dir / str(du_instance)

    def du_path(self, du: DeploymentUnitRecord) -> str:
        return f"{DU_TABLE}{du.instance}"

    def progress(self, du: DeploymentUnitRecord, request_id: str, stage: str, done: int = 0, total: int = -1) -> None:
        args: dict[str, Value] = {"stage": stage, "done": done, "total": total}
        self.dm.notifications.publish(
            Notification(Kind.PROGRESS, self.du_path(du) + ".", args=args, request_id=request_id)
        )

    def du_state_change(
        self,
        du: DeploymentUnitRecord,
        operation: str,
        state: str,
        started: datetime,
        fault: Fault | None = None,
    ) -> None:
        """Publish DUStateChange! — for every Install, Update and Uninstall, success or failure.

        Also logged: the ones start-up recovery publishes reach no subscriber (recovery
        runs before the control socket and the buses serve), the log is their only trace."""
        eus = tuple(f"{EU_TABLE}{n}" for n in du.eus)
        outcome = f"fault {fault.code.usp}: {fault.message}" if fault else "no fault"
        log.info("DUStateChange! %s of %s (UUID %s): %s, %s", operation, self.du_path(du), du.uuid, state, outcome)
        self.dm.emit_event(
            DU_STATE_CHANGE,
            {
                "UUID": du.uuid,
                "DeploymentUnitRef": self.du_path(du),
                "Version": du.version,
                "CurrentState": state,
                "Resolved": state == "Installed",
                "ExecutionUnitRefList": eus if state == "Installed" else (),
                "StartTime": started,
                "CompleteTime": now(),
                "OperationPerformed": operation,
                "Fault.FaultCode": fault.code.usp if fault else 0,
                "Fault.FaultString": (fault.message[:256] if fault else ""),
            },
        )
