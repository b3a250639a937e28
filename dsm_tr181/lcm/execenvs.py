"""Device.SoftwareModules.ExecEnv.{i}.: configured execution environments, their Enable,
run levels, Restart()/Reset() and resource figures."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm import sysinfo
from dsm_tr181.lcm.ports import Runtime
from dsm_tr181.lcm.records import ExecEnvRecord
from dsm_tr181.lcm.settings import ExecEnvSettings
from dsm_tr181.lcm.states import EE, EeRequest, EeStatus, allow
from dsm_tr181.lcm.tables import EE_TABLE, as_int, from_stamp, stamp
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.datamodel import CommandCall
from dsm_tr181.tree.nodes import Node

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)

ROW = EE_TABLE + "{i}."


class ExecEnvs:
    def __init__(self, lcm: Lcm) -> None:
        self.lcm = lcm
        self.settings = {ee.name: ee for ee in lcm.settings.execenvs}
        self.records: dict[str, ExecEnvRecord] = {}
        # ExecEnvs no longer in the configuration that still hold DUs: served with Status
        # Error so that their DUs can be seen and uninstalled, never started or updated.
        self.unconfigured: set[str] = set()
        self._cpu = sysinfo.CpuIdle()
        self._idle_at, self._idle = -1.0, -1

    # -- rows --------------------------------------------------------------------------------

    def restore(self, stored: list[ExecEnvRecord], in_use: set[str]) -> None:
        """One row per configured ExecEnv, keeping its instance number and controller
        settings, and one (Status Error) per ExecEnv gone from the configuration whose
        name is still ``in_use`` by a DU."""
        known = {r.name: r for r in stored}
        table = self.lcm.dm.table(EE_TABLE)
        for settings in self.lcm.settings.execenvs:
            record = known.get(settings.name) or ExecEnvRecord(
                name=settings.name,
                instance=table.next_instance,
                enable=settings.enable,
                initial_run_level=settings.initial_run_level,
                initial_eu_run_level=settings.initial_eu_run_level,
            )
            self.records[settings.name] = record
            self.lcm.dm.add_row(EE_TABLE, self._values(settings, record), number=record.instance)
        self.lcm.commit(put=list(self.records.values()))
        for name in sorted(in_use - self.records.keys()):
            gone = known.get(name) or ExecEnvRecord(name=name, instance=table.next_instance)
            log.warning("execution environment %s is no longer configured but holds DUs: serving it as Error", name)
            self.unconfigured.add(name)
            self.records[name] = ExecEnvRecord(name=name, instance=gone.instance, enable=False)
            placeholder = ExecEnvSettings(name=name, runtime="", enable=False, type="not configured")
            values = {**self._values(placeholder, self.records[name]), "Status": EeStatus.ERROR}
            self.lcm.dm.add_row(EE_TABLE, values, number=gone.instance)

    def _values(self, settings: ExecEnvSettings, record: ExecEnvRecord) -> dict[str, Value]:
        return {
            "Enable": record.enable,
            "Status": EeStatus.UP if record.enable else EeStatus.DISABLED,
            "Name": settings.name,
            "Type": settings.type_name[:64],
            "Vendor": settings.vendor,
            "Version": settings.version,
            "InitialRunLevel": record.initial_run_level,
            "CurrentRunLevel": record.initial_run_level
            if record.current_run_level is None
            else record.current_run_level,
            "InitialExecutionUnitRunLevel": record.initial_eu_run_level,
            "AllocatedDiskSpace": settings.allocated_disk_kib,
            "AllocatedMemory": settings.allocated_memory_kib,
            "AllocatedCPUPercent": settings.allocated_cpu_percent,
            "AvailableCPUPercent": -1,
            "RestartCount": record.restart_count,
            "RestartReason": record.restart_reason,
            "LastRestarted": from_stamp(record.last_restarted),
            "Signers": self._signers(settings, record),
        }

    def _signers(self, settings: ExecEnvSettings, record: ExecEnvRecord) -> tuple[str, ...]:
        """What a controller last set, else the configured trust-store names; rows gone are left out."""
        if record.signers is None:
            return self.lcm.certificates.refs(settings.signers)
        return tuple(ref for ref in record.signers if self.lcm.dm.find_node(ref) is not None)

    def trusted_signers(self, name: str) -> tuple[bytes, ...]:
        """DER of the enabled certificates the ExecEnv's Signers name: the anchors of its DUs' signatures."""
        return self.lcm.certificates.anchors(self.node(name).values["Signers"])  # type: ignore[arg-type]

    def requires_signature(self, name: str) -> bool:
        settings = self.settings.get(name)
        return settings is not None and settings.require_signature

    def node(self, name: str) -> Node:
        return self.lcm.dm.node(f"{EE_TABLE}{self.records[name].instance}")

    def ref(self, name: str) -> str:
        return f"{EE_TABLE}{self.records[name].instance}"

    def name_of(self, node: Node) -> str:
        return str(node.values["Name"])

    def runtime(self, name: str) -> Runtime:
        runtime = self.lcm.runtimes.get(name)
        if runtime is None:
            raise Fault(FaultCode.INVALID_CONFIGURATION, f"execution environment {name!r} is no longer configured")
        return runtime

    def enabled(self, name: str) -> bool:
        return self.records[name].enable

    def status(self, name: str) -> EeStatus:
        return EeStatus(str(self.node(name).values["Status"]))

    def allow(self, name: str, request: EeRequest) -> None:
        """states.EE's answer for a request on ``name``: nothing, or its fault. A configured
        ExecEnv in Error because its runtime is unreachable refuses new work with 7230 naming
        why (the table's Error row is the unconfigured ExecEnv's)."""
        if name not in self.unconfigured and request in (EeRequest.INSTALL, EeRequest.UPDATE):
            self.check_available(name)
        allow(EE, self.status(name), request, self.ref(name) + ".")

    def run_level(self, name: str) -> int:
        return as_int(self.node(name).values["CurrentRunLevel"])

    def resolve(self, ref: str) -> str:
        """The ExecEnv an InstallDU() targets: ``ref`` or, when empty, the default one (the
        configured default, else the first enabled, else the first). An unknown ``ref`` is the
        request's fault (7223); a disabled ExecEnv is the operation's (states.EE)."""
        if not ref:
            default = self.lcm.settings.default_execenv
            enabled = [name for name, record in self.records.items() if record.enable]
            return default or (enabled or list(self.records))[0]
        node = self.lcm.dm.find_node(ref)
        if node is None or node.schema.path != ROW:
            raise Fault(FaultCode.UNKNOWN_EE, f"no execution environment {ref!r}")
        return self.name_of(node)

    def check_available(self, name: str) -> None:
        """Fault naming the reason when ``name``'s runtime cannot be reached."""
        reason = self.lcm.availability.reason(name)
        if reason:
            raise Fault(FaultCode.INVALID_EE_STATE, f"execution environment {name!r} is in Error: {reason}")

    def show_status(self, name: str) -> None:
        """Status from Enable and the runtime: Disabled, Error (runtime unavailable) or Up."""
        if name in self.unconfigured:
            return
        if not self.records[name].enable:
            status = EeStatus.DISABLED
        else:
            status = EeStatus.ERROR if self.lcm.availability.reason(name) else EeStatus.UP
        self.lcm.dm.update(self.node(name), {"Status": status})

    # -- hooks ---------------------------------------------------------------------------------

    def install_hooks(self) -> None:
        dm = self.lcm.dm
        dm.on_set(ROW + "Enable", validate=self._check_configured, apply=self._enable_changed)
        dm.on_set(ROW + "InitialRunLevel", apply=self._persist_setting)
        dm.on_set(ROW + "InitialExecutionUnitRunLevel", apply=self._persist_setting)
        dm.on_set(ROW + "RequestedRunLevel", apply=lambda node, old, new: self._set_run_level(node, as_int(new)))
        dm.on_set(ROW + "Reset", apply=self._reset_requested)
        dm.on_set(ROW + "Signers", apply=self._signers_changed)
        dm.on_get(ROW + "AvailableDiskSpace", self._available_disk)
        dm.on_get(ROW + "AvailableCPUPercent", lambda node: self._idle_cpu())
        dm.on_get(ROW + "AvailableMemory", self._available_memory)
        dm.on_command(ROW + "SetRunLevel()", self._set_run_level_command)
        dm.on_command(ROW + "Restart()", self._restart_command)
        dm.on_command(ROW + "Reset()", self._reset_command)

    def _check_configured(self, node: Node, value: Value) -> None:
        allow(EE, EeStatus(str(node.values["Status"])), EeRequest.ENABLE if value else EeRequest.DISABLE, node.path)

    def _record(self, node: Node) -> ExecEnvRecord:
        return self.records[self.name_of(node)]

    def _persist_setting(self, node: Node, old: Value, new: Value) -> None:
        record = self._record(node)
        record.initial_run_level = as_int(node.values["InitialRunLevel"])
        record.initial_eu_run_level = as_int(node.values["InitialExecutionUnitRunLevel"])
        self.lcm.commit(put=[record])

    def _signers_changed(self, node: Node, old: Value, new: Value) -> None:
        record = self._record(node)
        record.signers = list(new)  # type: ignore[arg-type]
        self.lcm.commit(put=[record])

    def _enable_changed(self, node: Node, old: Value, new: Value) -> None:
        self._apply_enable(self._record(node), bool(new))

    def _apply_enable(self, record: ExecEnvRecord, enable: bool) -> None:
        """Enable starts the ExecEnv (run level back to InitialRunLevel, AutoStart EUs started);
        disabling stops its EUs and, TR-181 RestartCount being "the number of times the ExecEnv
        has been restarted since it was last disabled", sets RestartCount to 0."""
        node = self.node(record.name)
        if enable == (self.status(record.name) is not EeStatus.DISABLED):
            return
        record.enable = enable
        if enable:
            record.current_run_level = None
        else:
            record.restart_count = 0
        self.lcm.commit(put=[record])
        if enable:
            self.lcm.dm.update(node, {"CurrentRunLevel": record.initial_run_level})
            self.show_status(record.name)
            self.lcm.executions.clear_unstartable(record.name)
            self.lcm.executions.autostart(record.name)
        else:
            self.lcm.dm.update(node, {"RestartCount": 0})
            self.show_status(record.name)
            self.lcm.deployments.cancel_transfers(record.name)
            self.lcm.spawn(self.lcm.executions.stop_all(record.name, "execution environment disabled"), "ee-disable")

    # -- run levels ----------------------------------------------------------------------------

    def _set_run_level_command(self, call: CommandCall) -> dict[str, Value]:
        self._set_run_level(call.node, as_int(call.args["RequestedRunLevel"]))
        return {}

    def _set_run_level(self, node: Node, level: int) -> None:
        """Start AutoStart EUs at or below ``level``, stop the AutoStart ones above it;
        -1 returns to InitialRunLevel."""
        record = self._record(node)
        allow(EE, EeStatus(str(node.values["Status"])), EeRequest.SET_RUN_LEVEL, node.path)
        level = record.initial_run_level if level < 0 else level
        record.current_run_level = level  # kept across daemon restarts: the ExecEnv did not restart
        self.lcm.commit(put=[record])
        self.lcm.dm.update(node, {"CurrentRunLevel": level})
        self.lcm.executions.apply_run_level(record.name, level)

    # -- Restart() / Reset() --------------------------------------------------------------------

    def _restart_command(self, call: CommandCall) -> Awaitable[dict[str, Value]]:
        record = self._record(call.node)
        allow(EE, EeStatus(str(call.node.values["Status"])), EeRequest.RESTART, call.node.path)
        return self._restart(record, str(call.args.get("Reason", "")))

    async def _restart(self, record: ExecEnvRecord, reason: str) -> dict[str, Value]:
        node = self.node(record.name)
        self.lcm.dm.update(node, {"Status": EeStatus.RESTARTING})
        await self.lcm.executions.stop_all(record.name, "")
        record.restart_count += 1
        record.restart_reason = reason[:256]
        record.last_restarted = stamp()
        record.current_run_level = None
        self.lcm.commit(put=[record])
        self.lcm.dm.update(
            node,
            {
                "CurrentRunLevel": record.initial_run_level
                if record.current_run_level is None
                else record.current_run_level,
                "RestartCount": record.restart_count,
                "RestartReason": record.restart_reason,
                "LastRestarted": from_stamp(record.last_restarted),
            },
        )
        self.show_status(record.name)
        self.lcm.dm.emit_event(
            node.path + "Restarted!",
            {"RestartTime": from_stamp(record.last_restarted), "RestartReason": record.restart_reason},
        )
        self.lcm.executions.autostart(record.name)
        return {}

    def _reset_requested(self, node: Node, old: Value, new: Value) -> None:
        if new:
            record = self._record(node)
            self.allow(record.name, EeRequest.RESET)
            self.lcm.spawn(self._reset(record), "ee-reset")
            self.lcm.dm.update(node, {"Reset": False})

    def _reset_command(self, call: CommandCall) -> Awaitable[dict[str, Value]]:
        record = self._record(call.node)
        self.allow(record.name, EeRequest.RESET)
        return self._reset(record)

    async def _reset(self, record: ExecEnvRecord) -> dict[str, Value]:
        """Back to the factory state: every DU of this ExecEnv uninstalled, the configured
        settings restored (Enable, and Status with it), the configured preinstalled DUs
        installed again, then — when the configuration enables it — a restart."""
        settings = self.settings[record.name]
        await self.lcm.deployments.uninstall_all(record.name)
        record.enable = settings.enable
        record.initial_run_level = settings.initial_run_level
        record.initial_eu_run_level = settings.initial_eu_run_level
        record.current_run_level = None
        record.signers = None
        if not record.enable:
            record.restart_count = 0
        self.lcm.commit(put=[record])
        self.lcm.dm.update(
            self.node(record.name),
            {
                "Enable": record.enable,
                "Status": EeStatus.UP if record.enable else EeStatus.DISABLED,
                "InitialRunLevel": record.initial_run_level,
                "CurrentRunLevel": record.initial_run_level,
                "InitialExecutionUnitRunLevel": record.initial_eu_run_level,
                "RestartCount": record.restart_count,
                "Signers": self._signers(settings, record),
            },
        )
        for url in self.lcm.settings.preinstalled:
            await self.lcm.deployments.install_local(url, record.name)
        if record.enable:
            await self._restart(record, "Reset")
        return {}

    # -- resources -------------------------------------------------------------------------------

    def _available_disk(self, node: Node) -> int:
        free = sysinfo.disk_available_kib(self.lcm.settings.bundle_dir)
        allocated = as_int(node.values["AllocatedDiskSpace"])
        if allocated < 0 or free < 0:
            return free
        used = sum(du.disk_kib for du in self.lcm.deployments.records.values() if du.ee == self.name_of(node))
        return max(0, min(free, allocated - used))

    def _available_memory(self, node: Node) -> int:
        free = sysinfo.memory_available_kib()
        allocated = as_int(node.values["AllocatedMemory"])
        if allocated < 0 or free < 0:
            return free
        return max(0, min(free, allocated - self.lcm.executions.memory_in_use(self.name_of(node))))

    def _idle_cpu(self) -> int:
        """The share of CPU time left idle since the previous sample, sampled when read
        (reused for usage_interval s)."""
        now = time.monotonic()
        if self._idle_at < 0 or now - self._idle_at >= self.lcm.settings.usage_interval:
            self._idle_at, self._idle = now, self._cpu.percent()
        return self._idle

    def set_active(self, name: str, refs: tuple[str, ...]) -> None:
        self.lcm.dm.update(self.node(name), {"ActiveExecutionUnits": refs})
