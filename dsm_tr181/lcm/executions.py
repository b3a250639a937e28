"""Device.SoftwareModules.ExecutionUnit.{i}.: the EU state machine on top of a runtime.

Status follows the real container: Idle → Starting → Active on a start, Active →
Stopping → Idle on a stop, Restarting for Restart(). A controller's request is recorded
(RequestedState, persisted) and one reconcile task per EU drives the container towards
it. A container that exits on its own leaves the EU Idle with ExecutionFaultCode set;
AutoRestart restarts it with the TR-181 exponential back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from dsm_tr181.containerspec.resources import cpu_quota_us, execenv_resources, memory_limit_kib
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm import admission, euinputs
from dsm_tr181.lcm.confinement import execenv_limits
from dsm_tr181.lcm.ports import ContainerExit, ContainerUsage, Runtime, RuntimeUnavailable, SampledRuntime, StartSpec
from dsm_tr181.lcm.records import ExecutionUnitRecord
from dsm_tr181.lcm.states import EE, EU, DuStatus, EeRequest, EuFault, EuRequest, EuStatus, Next, allow
from dsm_tr181.lcm.tables import EU_TABLE, INFINITE_TIME, LOG_TABLE, as_int, from_stamp, now, stamp
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.datamodel import CommandCall
from dsm_tr181.tree.nodes import Node

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)

ROW = EU_TABLE + "{i}."
NETWORK_MODE = "X_RDKCENTRAL-COM_NetworkMode"  # vendor parameter (datamodel/regenerate.py)
NO_USAGE = ContainerUsage()  # of an EU not running (shared: whole-tree reads ask every row)
AUTO_RESTART = ("RetryMinimumWaitInterval", "RetryMaximumWaitInterval", "RetryIntervalMultiplier",
                "MaximumRetryCount", "ResetPeriod", "RetryCount")  # fmt: skip


@dataclass
class Eu:
    """An EU's record plus what the daemon knows of its container right now."""

    record: ExecutionUnitRecord
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    running: bool = False
    stopping: bool = False
    restart: bool = False  # Restart() asked for a stop-then-start
    cause: str = "controller"  # who asked for the current start: controller / auto
    started: float = 0.0  # monotonic time the container started
    exited: ContainerExit | None = None  # an exit seen while a start was in progress
    retry: asyncio.TimerHandle | None = None  # pending AutoRestart
    memory_limit_kib: int = -1  # of the running container (-1: none of its own)
    cpu_quota_us: int = -1  # its CFS quota per 100 ms (-1: none of its own)
    usage: ContainerUsage = NO_USAGE  # the last sample (taken when read)
    sampled: float = -1.0  # monotonic time of that sample (-1: none since the start)


class Executions:
    def __init__(self, lcm: Lcm) -> None:
        self.lcm = lcm
        self.units: dict[int, Eu] = {}
        self._by_container: dict[str, Eu] = {}
        self._active: dict[str, set[int]] = {}  # ExecEnv -> instances of its EUs whose Status is Active

    # -- rows ---------------------------------------------------------------------------------

    def add(self, record: ExecutionUnitRecord, disk_kib: int) -> Node:
        """Create the EU row (and its VendorLogFile row) for a record."""
        eu = Eu(record)
        self.units[record.instance] = eu
        self._by_container[record.container_id] = eu
        dm = self.lcm.dm
        log_ref = ""
        if record.log_row:
            name = record.log_file if len(record.log_file) <= 64 else Path(record.log_file).name
            row = dm.add_row(
                LOG_TABLE,
                {"Name": name, "MaximumSize": self.lcm.settings.eu_log_max_bytes, "Persistent": True},
                number=record.log_row,
            )
            log_ref = row.ref
        node = dm.add_row(EU_TABLE, self._values(record, disk_kib, log_ref), number=record.instance)
        dm.update(node.singles["AutoRestart"], self._auto_restart_values(record))
        self.input_rows(record)
        return node

    def input_rows(self, record: ExecutionUnitRecord) -> None:
        """The EU's HostObject.{i} and EnvVariable.{i} rows, from its inputs (replacing any),
        and its network mode."""
        dm = self.lcm.dm
        network = dm.node(f"{EU_TABLE}{record.instance}.NetworkConfig.")
        dm.update(network, {NETWORK_MODE: self.lcm.networking.mode(record)})
        wanted = {
            "HostObject.": [dict(row) for row in record.host_objects],
            "EnvVariable.": [{"Key": key, "Value": value} for key, value in record.env],
        }
        for table, values in wanted.items():
            path = f"{EU_TABLE}{record.instance}.{table}"
            for row in list(dm.table(path).rows.values()):
                dm.delete_row(row)
            for row_values in values:
                dm.add_row(path, row_values)

    def _values(self, record: ExecutionUnitRecord, disk_kib: int, log_ref: str) -> dict[str, Value]:
        return {
            "EUID": record.euid,
            "Alias": record.alias or f"cpe-{record.instance}",
            "Name": record.name,
            "ExecEnvLabel": record.container_id,
            "Status": EuStatus.IDLE,
            "ExecutionFaultCode": record.fault_code,
            "ExecutionFaultMessage": record.fault_message,
            "AutoStart": record.auto_start,
            "RunLevel": record.run_level,
            "Vendor": record.vendor,
            "Version": record.version,
            "Description": record.description,
            "Privileged": record.privileged,
            **self.allocations(record),
            "DiskSpaceInUse": disk_kib,
            "MemoryInUse": -1,
            "CPUPercentInUse": -1,
            "CreationTime": from_stamp(record.creation_time),
            "ShutdownDelay": record.shutdown_delay,
            "VendorLogList": (log_ref,) if log_ref else (),
            "ExecutionEnvRef": self.lcm.execenvs.ref(record.ee) if record.ee in self.lcm.execenvs.records else "",
            "RequestedState": record.requested_state,
        }

    @staticmethod
    def allocations(record: ExecutionUnitRecord) -> dict[str, Value]:
        limits = euinputs.limits_of(record)
        return {
            "AllocatedDiskSpace": limits.disk_kib,
            "AllocatedMemory": limits.memory_kib,
            "AllocatedCPUPercent": limits.cpu_percent,
        }

    @staticmethod
    def _auto_restart_values(record: ExecutionUnitRecord) -> dict[str, Value]:
        values: dict[str, Value] = {"Enable": bool(record.auto_restart.get("Enable", False))}
        values.update({name: int(record.auto_restart.get(name, 0)) for name in AUTO_RESTART})
        values["LastRestarted"] = from_stamp(str(record.auto_restart.get("LastRestarted", "")))
        values["NextRestart"] = INFINITE_TIME  # TR-181: "no restart is currently scheduled"
        return values

    def remove(self, instance: int) -> None:
        """Drop the EU's rows (the container must be gone already)."""
        eu = self.units.pop(instance)
        self._by_container.pop(eu.record.container_id, None)
        self._cancel_retry(eu)
        dm = self.lcm.dm
        dm.delete_row(f"{EU_TABLE}{instance}")
        if eu.record.log_row:
            dm.delete_row(f"{LOG_TABLE}{eu.record.log_row}")
        self._publish_active(eu.record.ee, instance, False)

    def node(self, eu: Eu) -> Node:
        return self.lcm.dm.node(f"{EU_TABLE}{eu.record.instance}")

    def of_ee(self, ee: str) -> list[Eu]:
        return [eu for eu in self.units.values() if eu.record.ee == ee]

    # -- hooks ----------------------------------------------------------------------------------

    def install_hooks(self) -> None:
        dm = self.lcm.dm
        dm.on_command(ROW + "SetRequestedState()", self._set_requested_state_command)
        dm.on_command(ROW + "Restart()", self._restart_command)
        dm.on_set(
            ROW + "RequestedState",
            validate=self._check_requested_state,
            apply=self._requested_state_set,
        )
        for name in ("AutoStart", "RunLevel", "ShutdownDelay"):
            dm.on_set(ROW + name, apply=self._persist_setting)
        for name in ("Enable", *AUTO_RESTART):
            dm.on_set(ROW + "AutoRestart." + name, apply=self._persist_auto_restart)
        dm.on_get(ROW + "Uptime", self._uptime)
        dm.on_get(ROW + "MemoryInUse", lambda node: self.usage(self._eu(node)).memory_kib)
        dm.on_get(ROW + "CPUPercentInUse", lambda node: min(100, self.usage(self._eu(node)).cpu_percent))

    def _eu(self, node: Node) -> Eu:
        return self.units[node.number]

    def _persist_setting(self, node: Node, old: Value, new: Value) -> None:
        record = self._eu(node).record
        record.auto_start = bool(node.values["AutoStart"])
        record.run_level = as_int(node.values["RunLevel"])
        record.shutdown_delay = as_int(node.values["ShutdownDelay"])
        self.lcm.commit(put=[record])

    def _persist_auto_restart(self, node: Node, old: Value, new: Value) -> None:
        eu = self.units[node.parent.number]  # type: ignore[union-attr]
        eu.record.auto_restart.update({k: v for k, v in node.values.items() if k in ("Enable", *AUTO_RESTART)})
        self.lcm.commit(put=[eu.record])

    def _uptime(self, node: Node) -> int:
        eu = self.units.get(node.number)
        return int(time.monotonic() - eu.started) if eu and eu.running else 0

    # -- requests (states.EU and states.EE decide) ------------------------------------------------

    def status(self, eu: Eu) -> EuStatus:
        return EuStatus(str(self.node(eu).values["Status"]))

    def _check_requested_state(self, node: Node, state: Value) -> None:
        self.check_request(node, EuRequest(str(state)))

    def check_request(self, node: Node, request: EuRequest) -> Next[EuStatus]:
        """The tables' answer to a controller's request, or their fault."""
        eu = self._eu(node)
        allow(EE, self.lcm.execenvs.status(eu.record.ee), EeRequest.EU_REQUEST, node.path)
        if request in (EuRequest.ACTIVE, EuRequest.RESTART):  # a start needs its runtime (7230, naming why not)
            self.lcm.execenvs.check_available(eu.record.ee)
        du = self.lcm.deployments.records.get(eu.record.du)
        if du is not None and du.status != DuStatus.INSTALLED:
            raise Fault(FaultCode.INVALID_DU_STATE, f"the deployment unit is {du.status}", node.path)
        return allow(EU, self.status(eu), request, node.path)

    def _set_requested_state_command(self, call: CommandCall) -> dict[str, Value]:
        request = EuRequest(str(call.args["RequestedState"]))
        self.check_request(call.node, request)
        self.request(self._eu(call.node), EuStatus(request.value))
        return {}

    def _requested_state_set(self, node: Node, old: Value, new: Value) -> None:
        self.request(self._eu(node), EuStatus(str(new)))

    def _restart_command(self, call: CommandCall) -> dict[str, Value]:
        eu = self._eu(call.node)
        answer = self.check_request(call.node, EuRequest.RESTART)
        if not answer.act:
            return {}  # Restarting already: "no effect"
        # TR-181 AutoRestart.RetryCount: "Invoking the Restart() command also has the effect
        # of resetting this parameter to zero."
        self._set_retry_count(eu, 0)
        if answer.state is EuStatus.RESTARTING:
            eu.restart = True
            self._set_status(eu, EuStatus.RESTARTING)
        self.request(eu, EuStatus.ACTIVE)
        return {}

    def request(self, eu: Eu, state: str, cause: str = "controller") -> None:
        """Record the wanted state (persisted first) and let the reconcile task act."""
        if state == EuStatus.IDLE:
            self._cancel_retry(eu)
        self.want(eu, state)
        if state == EuStatus.ACTIVE:
            eu.cause = cause
        if eu.task is None or eu.task.done():
            eu.task = self.lcm.spawn(self._reconcile(eu), f"eu-{eu.record.instance}")

    def want(self, eu: Eu, state: str) -> None:
        """Record RequestedState (store and tree) without acting on it."""
        if eu.record.requested_state != state:
            eu.record.requested_state = state
            # Not waiting for the disk before the runtime acts: the flush runs beside ``runc run``.
            self.lcm.commit(put=[eu.record], durable=False)
            self.lcm.dm.update(self.node(eu), {"RequestedState": state})

    async def wait(self, eu: Eu) -> None:
        """Until the EU's reconcile task (if any) is done."""
        while eu.task is not None and not eu.task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(eu.task)

    # -- the state machine ------------------------------------------------------------------------

    async def _reconcile(self, eu: Eu) -> None:
        async with eu.lock:
            while True:
                want = eu.record.requested_state
                if eu.running and (want == EuStatus.IDLE or eu.restart):
                    if not await self._stop(eu):
                        return
                elif want == EuStatus.ACTIVE and not eu.running:
                    eu.restart = False
                    if not await self._start(eu):
                        return
                else:
                    eu.restart = False
                    return

    async def _start(self, eu: Eu) -> bool:
        record = eu.record
        if not self.lcm.execenvs.enabled(record.ee):
            self._fault(eu, EuFault.UNSTARTABLE, "the execution environment is disabled")
            return self._give_up(eu)
        du = self.lcm.deployments.records.get(record.du)
        if du is None or not du.bundle:
            self._fault(eu, EuFault.UNSTARTABLE, "the deployment unit has no bundle")
            return self._give_up(eu)
        failure = EuFault.FAILURE_ON_START if eu.cause == "controller" else EuFault.FAILURE_ON_AUTO_START
        try:
            config = self.lcm.confinement.spec(record, du)
        except Fault as fault:
            self._fault(eu, EuFault.UNSTARTABLE, fault.message)
            return self._give_up(eu)
        refusal = ""
        # A runtime that does not say it puts EUs under the ExecEnv's parent cgroup (Dobby, a
        # plug-in) gets the ExecEnv's allocation shared out by admission (lcm/admission.py).
        if not getattr(self.lcm.execenvs.runtime(record.ee), "parent_cgroup", False):
            config, refusal = admission.share_out(self.lcm, record, config)
        refusal = refusal or admission.memory_refusal(self.lcm, record, config)
        if refusal:
            log.warning("EU %s not started: %s", record.euid, refusal)
            self._fault(eu, failure, refusal)
            return self._give_up(eu)
        settings = self.lcm.execenvs.settings[record.ee]
        if self.node(eu).values["Status"] != EuStatus.RESTARTING:
            self._set_status(eu, EuStatus.STARTING)
        eu.exited = None
        spec = StartSpec(
            container_id=record.container_id,
            config=config,
            log_path=Path(record.log_file),
            log_max_bytes=self.lcm.settings.eu_log_max_bytes,
            log_backups=self.lcm.settings.eu_log_backups,
            execenv_resources=execenv_resources(execenv_limits(settings), os.cpu_count() or 1),
        )
        eu.memory_limit_kib, eu.cpu_quota_us = memory_limit_kib(config), cpu_quota_us(config)
        if self.lcm.availability.reason(record.ee):
            return self._wait_for_runtime(eu, self.lcm.availability.reason(record.ee))
        try:
            await self.lcm.appdata.before_start(du, record.uid_base if record.uid_count else None)
            await self.lcm.networking.attach(record)
            status = await self.lcm.execenvs.runtime(record.ee).start(spec)
        except RuntimeUnavailable as fault:
            log.warning("EU %s cannot start: %s", record.euid, fault)
            self.lcm.availability.runtime_failed(record.ee, fault)
            return self._wait_for_runtime(eu, fault.message)
        except Fault as fault:
            log.warning("EU %s failed to start: %s", record.euid, fault)
            await self.lcm.networking.detach(record)
            self._fault(eu, failure, fault.message)
            return self._give_up(eu)
        eu.running = True
        eu.started = time.monotonic()
        if (record.held_memory_kib, record.held_quota_us) != (eu.memory_limit_kib, eu.cpu_quota_us):
            record.held_memory_kib, record.held_quota_us = eu.memory_limit_kib, eu.cpu_quota_us
            self.lcm.commit(put=[record])
        if eu.exited is not None:  # it died while the start was being reported
            eu.running = False
            self._fault(eu, failure, _describe_exit(eu.exited, eu.memory_limit_kib))
            return self._give_up(eu)
        log.info("EU %s active (pid %s)", record.euid, status.pid)
        self._set_status(eu, EuStatus.ACTIVE, fault=(EuFault.NO_FAULT, ""))
        self._schedule_retry_reset(eu)
        return True

    async def _stop(self, eu: Eu) -> bool:
        record = eu.record
        if not eu.restart:
            self._set_status(eu, EuStatus.STOPPING)
        eu.stopping = True
        try:
            await self.lcm.execenvs.runtime(record.ee).stop(record.container_id, float(record.shutdown_delay))
        except Fault as fault:
            if isinstance(fault, RuntimeUnavailable):
                self.lcm.availability.runtime_failed(record.ee, fault)
            log.warning("EU %s failed to stop: %s", record.euid, fault)
            self._fault(eu, EuFault.FAILURE_ON_STOP, fault.message)
            self._set_status(eu, EuStatus.ACTIVE)
            return False
        finally:
            eu.stopping = False
        eu.running = False
        await self.lcm.networking.detach(record)
        self._set_status(eu, EuStatus.RESTARTING if eu.restart else EuStatus.IDLE, fault=(EuFault.NO_FAULT, ""))
        return True

    def _give_up(self, eu: Eu) -> bool:
        """A start failed: the EU rests Idle and is not retried on its own."""
        eu.restart = False
        self._set_status(eu, EuStatus.IDLE)
        self.want(eu, EuStatus.IDLE)
        return False

    def _wait_for_runtime(self, eu: Eu, reason: str) -> bool:
        """The runtime is unavailable: the EU rests Idle, keeping its RequestedState;
        it starts when the runtime is back (see availability)."""
        eu.restart = False
        self._fault(eu, EuFault.UNSTARTABLE, f"execution environment Error: {reason}")
        self._set_status(eu, EuStatus.IDLE)
        return False

    def runtime_down(self, ee: str, reason: str) -> None:
        """``ee``'s runtime became unavailable: the EUs that should run there say why they do not."""
        for eu in self.of_ee(ee):
            if not eu.running and self._wanted(eu, ee):
                self._fault(eu, EuFault.UNSTARTABLE, f"execution environment Error: {reason}")

    def on_exit(self, exit: ContainerExit) -> None:
        """A runtime saw a container exit (called on the loop)."""
        eu = self._by_container.get(exit.container_id)
        if eu is None or eu.stopping:
            return
        if eu.task is not None and not eu.task.done() and not eu.running:
            eu.exited = exit  # during a start: the start reports it
            return
        if not eu.running:
            return
        eu.running = False
        self.lcm.spawn(self.lcm.networking.detach(eu.record), f"eu-{eu.record.instance}-network")
        message = _describe_exit(exit, eu.memory_limit_kib)
        log.info("EU %s %s", eu.record.euid, message)
        # TR-181 AutoRestart.RetryCount counts the times the EU "has terminated abnormally":
        # an exit with status 0 is a normal end, neither a fault nor a reason to restart.
        normal = exit.signal is None and exit.exit_status == 0 and not exit.oom_killed
        self._fault(eu, EuFault.NO_FAULT if normal else EuFault.FAILURE_WHILE_ACTIVE, message)
        self._set_status(eu, EuStatus.IDLE)
        if normal or not self._schedule_auto_restart(eu):
            self.want(eu, EuStatus.IDLE)

    # -- status and faults ----------------------------------------------------------------------

    def _set_status(self, eu: Eu, status: str, fault: tuple[str, str] | None = None) -> None:
        values: dict[str, Value] = {"Status": status}
        if fault is not None:
            values["ExecutionFaultCode"], values["ExecutionFaultMessage"] = fault
            self._remember_fault(eu, *fault)
        if status != EuStatus.ACTIVE:
            eu.usage, eu.sampled = NO_USAGE, -1.0
        self.lcm.dm.update(self.node(eu), values)
        self._publish_active(eu.record.ee, eu.record.instance, status == EuStatus.ACTIVE)

    def _fault(self, eu: Eu, code: str, message: str) -> None:
        self.lcm.dm.update(self.node(eu), {"ExecutionFaultCode": code, "ExecutionFaultMessage": message[:256]})
        self._remember_fault(eu, code, message[:256])

    def _remember_fault(self, eu: Eu, code: str, message: str) -> None:
        if (eu.record.fault_code, eu.record.fault_message) != (code, message):
            eu.record.fault_code, eu.record.fault_message = code, message
            self.lcm.commit(put=[eu.record])

    def _publish_active(self, ee: str, instance: int, active: bool) -> None:
        """ExecEnv.ActiveExecutionUnits after one EU's Status changed (kept as a set: a
        rescan of every EU's row per change cost milliseconds at 1000 EUs)."""
        if ee not in self.lcm.execenvs.records:
            return
        instances = self._active.setdefault(ee, set())
        if (instance in instances) == active:
            return
        (instances.add if active else instances.discard)(instance)
        self.lcm.execenvs.set_active(ee, tuple(f"{EU_TABLE}{number}" for number in sorted(instances)))

    # -- AutoRestart (TR-181 ExecutionUnit.{i}.AutoRestart.) --------------------------------------

    def _schedule_auto_restart(self, eu: Eu) -> bool:
        settings = self.node(eu).singles["AutoRestart"].values
        if not settings["Enable"]:
            return False
        count = as_int(settings["RetryCount"])
        if settings["MaximumRetryCount"] and count >= as_int(settings["MaximumRetryCount"]):
            return False
        delay = _backoff(
            as_int(settings["RetryMinimumWaitInterval"]),
            as_int(settings["RetryMaximumWaitInterval"]),
            as_int(settings["RetryIntervalMultiplier"]),
            count,
        )
        restart_at = now() + timedelta(seconds=round(delay))
        self.lcm.dm.update(self.node(eu).singles["AutoRestart"], {"RetryCount": count + 1, "NextRestart": restart_at})
        eu.record.auto_restart["RetryCount"] = count + 1
        self.lcm.commit(put=[eu.record])
        loop = asyncio.get_running_loop()
        eu.retry = loop.call_later(delay, self._auto_restart, eu)
        log.info("EU %s restarts in %.1f s (retry %d)", eu.record.euid, delay, count + 1)
        return True

    def _auto_restart(self, eu: Eu) -> None:
        eu.retry = None
        if eu.record.instance not in self.units:
            return
        last = stamp()
        eu.record.auto_restart["LastRestarted"] = last
        self.lcm.dm.update(self.node(eu).singles["AutoRestart"], {"LastRestarted": from_stamp(last),
                                                                  "NextRestart": INFINITE_TIME})  # fmt: skip
        self.request(eu, EuStatus.ACTIVE, cause="auto")

    def _cancel_retry(self, eu: Eu) -> None:
        """A pending AutoRestart is dropped: nothing is scheduled any more."""
        if eu.retry is None:
            return
        eu.retry.cancel()
        eu.retry = None
        if eu.record.instance in self.units:
            self.lcm.dm.update(self.node(eu).singles["AutoRestart"], {"NextRestart": INFINITE_TIME})

    def _set_retry_count(self, eu: Eu, count: int) -> None:
        eu.record.auto_restart["RetryCount"] = count
        self.lcm.commit(put=[eu.record])
        self.lcm.dm.update(self.node(eu).singles["AutoRestart"], {"RetryCount": count})

    def _schedule_retry_reset(self, eu: Eu) -> None:
        """RetryCount goes back to 0 once the EU has run for ResetPeriod seconds."""
        settings = self.node(eu).singles["AutoRestart"].values
        period = as_int(settings["ResetPeriod"])
        if not settings["Enable"] or not period or not settings["RetryCount"]:
            return
        started = eu.started

        def reset() -> None:
            if eu.running and eu.started == started and eu.record.instance in self.units:
                self._set_retry_count(eu, 0)

        asyncio.get_running_loop().call_later(period, reset)

    # -- groups ------------------------------------------------------------------------------------

    def autostart(self, ee: str) -> None:
        """The ExecEnv started (device boot, Enable, Restart()): start its AutoStart EUs within
        the run level — TR-181 ExecutionUnit.AutoStart: "If true and the RunLevel verification is
        also met, then this EU will be automatically started by the device after its ExecEnv is
        either rebooted or restarted. If false this EU will not be started ... until it is
        explicitly commanded to do so". A RequestedState of Active from before does not count."""
        if self.lcm.availability.reason(ee):
            return  # started when its runtime is back
        level = self.lcm.execenvs.run_level(ee)
        for eu in self.of_ee(ee):
            record = eu.record
            du = self.lcm.deployments.records.get(record.du)
            if du is None or du.status != DuStatus.INSTALLED:
                continue
            if record.auto_start and (level < 0 or record.run_level <= level):
                self.request(eu, EuStatus.ACTIVE, cause="auto")
            elif not eu.running:
                self.want(eu, EuStatus.IDLE)

    def clear_unstartable(self, ee: str) -> None:
        """The ExecEnv is enabled again: its EUs are no longer UnStartable ("NoFault MUST be
        used when everything is working as intended")."""
        for eu in self.of_ee(ee):
            if eu.record.fault_code == EuFault.UNSTARTABLE:
                self._fault(eu, EuFault.NO_FAULT, "")

    def died_unseen(self, eu: Eu) -> None:
        """Its container exited while the daemon was not running: the fault is recorded and,
        unless AutoRestart schedules a restart, the EU rests Idle."""
        message = "container exited while the deployment and state manager was not running"
        log.warning("EU %s: %s", eu.record.euid, message)
        self._fault(eu, EuFault.FAILURE_WHILE_ACTIVE, message)
        if not self._schedule_auto_restart(eu):
            self.want(eu, EuStatus.IDLE)

    def _wanted(self, eu: Eu, ee: str) -> bool:
        """An installed EU that is AutoStart within the run level, or requested Active."""
        record = eu.record
        du = self.lcm.deployments.records.get(record.du)
        if du is None or du.status != DuStatus.INSTALLED:
            return False
        level = self.lcm.execenvs.run_level(ee)
        return record.requested_state == EuStatus.ACTIVE or (
            record.auto_start and (level < 0 or record.run_level <= level)
        )

    def apply_run_level(self, ee: str, level: int) -> None:
        for eu in self.of_ee(ee):
            if eu.record.auto_start:
                self.request(eu, EuStatus.ACTIVE if eu.record.run_level <= level else EuStatus.IDLE, cause="auto")

    async def stop_all(self, ee: str, reason: str) -> None:
        """Stop every EU of ``ee``; with a reason they are marked UnStartable (EE disabled)."""
        units = self.of_ee(ee)
        for eu in units:
            self.request(eu, EuStatus.IDLE)
        for eu in units:
            await self.wait(eu)
            if reason:
                self._fault(eu, EuFault.UNSTARTABLE, reason)

    async def stop_and_forget(self, eu: Eu) -> None:
        """Stop the EU's container for good and remove it from the runtime."""
        self.request(eu, EuStatus.IDLE)
        await self.wait(eu)
        if eu.running:
            raise Fault(FaultCode.COMMAND_FAILURE, f"execution unit {eu.record.euid} did not stop")
        await self.lcm.networking.detach(eu.record)
        if eu.record.ee in self.lcm.execenvs.unconfigured:
            log.warning("EU %s: no runtime to remove its container from (ExecEnv not configured)", eu.record.euid)
            return
        await self.lcm.execenvs.runtime(eu.record.ee).remove(eu.record.container_id)

    async def stop_and_keep(self, eu: Eu) -> None:
        """Stop the EU's container, also one not adopted (yet), and delete it; the row stays."""
        self.request(eu, EuStatus.IDLE)
        await self.wait(eu)
        if eu.running:
            raise Fault(FaultCode.COMMAND_FAILURE, f"execution unit {eu.record.euid} did not stop")
        if eu.record.ee not in self.lcm.execenvs.unconfigured:
            await self.lcm.execenvs.runtime(eu.record.ee).stop(eu.record.container_id, 0)
        await self.lcm.networking.detach(eu.record)

    def note_fault(self, eu: Eu, code: str, message: str) -> None:
        """Show a fault on the EU's row (ExecutionFaultCode/Message) whatever its status."""
        self._fault(eu, code, message)

    def adopt(self, eu: Eu) -> None:
        """Its container survived a daemon restart and is running, holding what it started with."""
        eu.memory_limit_kib, eu.cpu_quota_us = eu.record.held_memory_kib, eu.record.held_quota_us
        eu.running = True
        eu.started = time.monotonic()
        self._set_status(eu, EuStatus.ACTIVE)

    # -- usage: sampled when read -------------------------------------------------------------------

    def usage(self, eu: Eu) -> ContainerUsage:
        """The EU's memory, CPU share and processes: sampled when read, the sample reused for
        ``usage_interval`` s. Nothing samples an EU nobody asks about (MemoryInUse and
        CPUPercentInUse are never announced, so no subscription needs them either)."""
        if not eu.running:
            return NO_USAGE
        if eu.sampled < 0 or time.monotonic() - eu.sampled >= self.lcm.settings.usage_interval:
            eu.sampled = time.monotonic()
            try:
                runtime = self.lcm.execenvs.runtime(eu.record.ee)
            except Fault:
                return eu.usage
            if isinstance(runtime, SampledRuntime):  # a few file reads: at once
                eu.usage = runtime.usage_now(eu.record.container_id)
            else:  # a round trip (Dobby's GetInfo): this read gets the previous sample
                self.lcm.spawn(self._sample(eu, runtime), f"eu-{eu.record.instance}-usage")
        return eu.usage

    async def _sample(self, eu: Eu, runtime: Runtime) -> None:
        try:
            usage = await runtime.usage(eu.record.container_id)
        except RuntimeUnavailable as fault:
            self.lcm.availability.runtime_failed(eu.record.ee, fault)
            return
        except Fault as fault:
            log.debug("usage of %s: %s", eu.record.euid, fault)
            return
        if eu.running:
            eu.usage = usage

    def memory_in_use(self, ee: str) -> int:
        return sum(max(0, self.usage(eu).memory_kib) for eu in self.of_ee(ee) if eu.running)

    async def close(self) -> None:
        for eu in self.units.values():
            if eu.retry:
                eu.retry.cancel()
        if self.lcm.settings.stop_containers_on_exit:
            for eu in list(self.units.values()):
                if eu.running:
                    try:
                        await self.lcm.execenvs.runtime(eu.record.ee).stop(
                            eu.record.container_id, float(eu.record.shutdown_delay)
                        )
                    except Fault as fault:  # e.g. its runtime is gone: the others still stop
                        log.error("EU %s not stopped on exit: %s", eu.record.euid, fault)
        for eu in self.units.values():
            if eu.task and not eu.task.done():
                eu.task.cancel()


def _describe_exit(exit: ContainerExit, limit_kib: int = -1) -> str:
    if exit.oom_killed:
        limit = f"{limit_kib} KiB" if limit_kib >= 0 else "its execution environment's allocation"
        if exit.signal is not None:
            return f"out of memory: container killed by the OOM killer (signal {exit.signal}; memory limit {limit})"
        return (
            f"out of memory: the OOM killer killed a process of the container (memory limit {limit}), "
            f"then it exited with status {exit.exit_status}"
        )
    if exit.signal is not None:
        return f"container killed by signal {exit.signal}"
    if exit.exit_status is None:
        return "container exited (status unknown)"
    return f"container exited with status {exit.exit_status}"


def _backoff(minimum: int, maximum: int, multiplier: int, count: int) -> float:
    """TR-181 AutoRestart: between m·(k/1000)^n and m·(k/1000)^(n+1), capped by the maximum."""
    factor = max(multiplier, 1000) / 1000
    low = max(minimum, 1) * factor**count
    if maximum and low >= maximum:
        return float(maximum)
    high = max(minimum, 1) * factor ** (count + 1)
    return min((low + high) / 2, float(maximum) if maximum else high)
