"""Start-up: rebuild the tree from the store and bring everything back to a consistent state.

After a crash at any point the journal says what was under way:

* an interrupted Install is rolled back (files and rows removed, DUStateChange! Failed);
* an interrupted Update is finished once its new version was proven (lcm/deployments.py),
  rolled back otherwise — bundle, records and data volumes as before it — and the EUs it
  had stopped are started again;
* an interrupted Uninstall is finished.

Then containers still running are adopted (or stopped when no EU wants them), stale
containers and orphan bundle directories and logs are removed. An ExecEnv none of whose
containers survived started with the device: CurrentRunLevel is InitialRunLevel and its
AutoStart EUs within it start. Otherwise only the daemon restarted: the ExecEnv keeps its
CurrentRunLevel and what runs; an EU whose container exited meanwhile keeps Idle with
FailureWhileActive (AutoRestart may schedule it), never a silent restart. A runtime that
cannot be reached leaves its ExecEnvs Error until it is back (:mod:`.availability`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.deployments import data_snapshot
from dsm_tr181.lcm.ports import Runtime, RuntimeUnavailable
from dsm_tr181.lcm.records import (
    AppDataRecord,
    CertificateRecord,
    DeploymentUnitRecord,
    ExecEnvRecord,
    ExecutionUnitRecord,
    OperationRecord,
    Snapshot,
)
from dsm_tr181.lcm.states import DuOutcome, DuStatus, EuStatus, Operation
from dsm_tr181.lcm.tables import from_stamp
from dsm_tr181.lcm.urls import display_url

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted by a restart of the deployment and state manager"


async def recover(lcm: Lcm, snapshot: Snapshot) -> None:
    for table_path, next_instance in snapshot.counters.items():
        table = lcm.dm.table(table_path)
        table.next_instance = max(table.next_instance, next_instance)
    dus: dict[int, DeploymentUnitRecord] = {du.instance: du for du in snapshot.of(DeploymentUnitRecord)}
    lcm.certificates.restore(snapshot.of(CertificateRecord))
    lcm.execenvs.restore(snapshot.of(ExecEnvRecord), {du.ee for du in dus.values()})
    await lcm.appdata.restore(snapshot.of(AppDataRecord))
    ops: dict[int, OperationRecord] = {op.du: op for op in snapshot.of(OperationRecord)}
    eus: list[ExecutionUnitRecord] = snapshot.of(ExecutionUnitRecord)
    installing = {n for n, op in ops.items() if op.kind == Operation.INSTALL.kind}
    for eu in sorted(eus, key=lambda r: r.instance):
        if eu.du in dus and eu.du not in installing:
            lcm.executions.add(eu, dus[eu.du].disk_kib)
    for du in sorted(dus.values(), key=lambda r: r.instance):
        if du.instance not in installing:
            lcm.deployments.add_row(du)
    for op in ops.values():
        interrupted = dus.get(op.du)
        if interrupted is None:
            lcm.commit(delete=[op])
            continue
        try:
            await _resume(lcm, interrupted, op, [record for record in eus if record.du == interrupted.instance])
        except Fault as fault:  # left journaled: the next start tries again
            log.error("cannot resume the interrupted %s of DU %s: %s", op.kind, interrupted.instance, fault)
    # A finished update starts its EUs again: let those starts end before the sweep, which
    # would otherwise take a container still being created for a stale one and delete it.
    for unit in list(lcm.executions.units.values()):
        await lcm.executions.wait(unit)
    resumed = [eu for eu in lcm.executions.units.values() if eu.record.requested_state == EuStatus.ACTIVE]
    booted = await _containers(lcm)
    await lcm.networking.sweep()
    await _orphan_files(lcm)
    for name, record in lcm.execenvs.records.items():
        if not record.enable:
            continue
        if name in booted:
            _started(lcm, record)
        else:  # only the daemon restarted: what runs was adopted; an update resumes its EUs
            for unit in resumed:
                if unit.record.ee == name and not unit.running and unit.record.requested_state == EuStatus.ACTIVE:
                    lcm.executions.request(unit, EuStatus.ACTIVE, cause="auto")


def _started(lcm: Lcm, record: ExecEnvRecord) -> None:
    """The ExecEnv starts with the device (no container of it survived): TR-181 CurrentRunLevel
    "Upon startup (whether that is caused by a device Boot or the Execution Environment
    starting) ... will be equal to InitialRunLevel", and AutoStart with RunLevel decide what
    starts — not the RequestedState from before the boot (see Executions.autostart)."""
    if record.current_run_level is not None:
        record.current_run_level = None
        lcm.commit(put=[record])
        lcm.dm.update(lcm.execenvs.node(record.name), {"CurrentRunLevel": record.run_level()})
    lcm.executions.autostart(record.name)


async def _resume(lcm: Lcm, du: DeploymentUnitRecord, op: OperationRecord, eus: list[ExecutionUnitRecord]) -> None:
    started = from_stamp(op.started)
    interrupted = Fault(FaultCode.REQUEST_DENIED, INTERRUPTED)
    if op.kind == Operation.INSTALL.kind:
        log.warning("rolling back the interrupted installation of %s", display_url(du.url))
        await lcm.packager.remove(Path(op.target))
        lcm.commit(delete=[*eus, du, op])
        lcm.du_state_change(du, Operation.INSTALL, DuOutcome.FAILED, started, interrupted)
    elif op.kind == Operation.UPDATE.kind and op.stage == "proven":
        log.warning("finishing the interrupted update of DU %s", du.instance)
        await lcm.deployments.finish_update(du, op)
        lcm.du_state_change(du, Operation.UPDATE, DuOutcome.INSTALLED, started)
    elif op.kind == Operation.UPDATE.kind and op.stage in ("swapped", "rollback"):
        log.warning("rolling back the interrupted update of DU %s (the new version was not proven)", du.instance)
        await lcm.deployments.roll_back(du, op, start=False)  # recover() starts the EUs wanted Active
        lcm.du_state_change(du, Operation.UPDATE, DuOutcome.INSTALLED, started, interrupted)
    elif op.kind == Operation.UPDATE.kind:
        log.warning("rolling back the interrupted update of DU %s", du.instance)
        await lcm.packager.remove(Path(op.target))
        await lcm.appdata.drop_snapshot(data_snapshot(op))
        du.status = DuStatus.INSTALLED
        lcm.commit(put=[du], delete=[op])
        lcm.deployments.refresh(du)
        for instance in op.restart_eus:
            eu = lcm.executions.units.get(instance)
            if eu is not None:
                lcm.executions.want(eu, EuStatus.ACTIVE)  # recover() starts it with the autostart
        lcm.du_state_change(du, Operation.UPDATE, DuOutcome.INSTALLED, started, interrupted)
    else:
        log.warning("finishing the interrupted uninstall of DU %s", du.instance)
        await lcm.deployments.finish_uninstall(du, op)
        lcm.du_state_change(du, Operation.UNINSTALL, DuOutcome.UNINSTALLED, started)


async def _containers(lcm: Lcm) -> set[str]:
    """Adopt what every runtime still runs (see :func:`adopt_containers`); a runtime that cannot
    be reached makes its ExecEnvs Error (and is probed until it is back) instead of stopping the
    start-up. Returns the ExecEnvs the device booted (none of their EUs' containers exist)."""
    booted: set[str] = set()
    for runtime in lcm.availability.runtimes():
        try:
            booted |= await adopt_containers(lcm, runtime)
        except RuntimeUnavailable as fault:
            lcm.availability.mark_down(runtime, fault.message)
    return booted


async def adopt_containers(lcm: Lcm, runtime: Runtime) -> set[str]:
    """For this runtime's ExecEnvs: adopt the containers that survived; stop and remove the
    ones no EU owns; an EU whose container exited while the daemon was down gets its fault
    recorded. A container of another ExecEnv's EU (two ExecEnvs on one shared Dobby) is left
    alone.

    Returns the ExecEnvs none of whose EUs' containers exist any more: the device booted
    (a daemon restart keeps containers, running or exited; only a boot clears the runtime's
    state) — or nothing ran in them, where starting afresh is the same."""
    everyone = {eu.record.container_id for eu in lcm.executions.units.values()}
    execenvs = lcm.availability.execenvs_of(runtime)
    units = {eu.record.container_id: eu for ee in execenvs for eu in lcm.executions.of_ee(ee)}
    present = set(await runtime.list_ids())
    booted = {ee for ee in execenvs if not present & {eu.record.container_id for eu in lcm.executions.of_ee(ee)}}
    running = set(await runtime.adopt())
    for container_id in sorted(running):
        eu = units.get(container_id)
        if eu is not None and not eu.running:
            log.info("adopting the running container of EU %s", eu.record.euid)
            lcm.executions.adopt(eu)
        elif eu is None and container_id not in everyone:
            log.warning("stopping container %s: no execution unit owns it", container_id)
            await runtime.stop(container_id, 0)
            await runtime.remove(container_id)
    for container_id in await runtime.list_ids():
        if container_id not in running and (container_id in units or container_id not in everyone):
            await runtime.remove(container_id)
            eu = units.get(container_id)
            if eu is not None and eu.record.requested_state == EuStatus.ACTIVE:
                lcm.executions.died_unseen(eu)
    return booted


async def _orphan_files(lcm: Lcm) -> None:
    """Bundle directories and logs no record refers to (left by a crash) are removed."""
    bundles = {Path(du.bundle) for du in lcm.deployments.records.values() if du.bundle}
    roots = {lcm.bundle_root(n) for n in lcm.deployments.records}
    for child in _children(lcm.settings.bundle_dir):
        if child not in roots:
            log.warning("removing orphan bundle directory %s", child)
            await lcm.packager.remove(child)
            continue
        for generation in _children(child):
            if generation not in bundles:
                log.warning("removing orphan bundle directory %s", generation)
                await lcm.packager.remove(generation)
    logs = {Path(eu.record.log_file).name for eu in lcm.executions.units.values()}
    for child in _children(lcm.settings.log_dir):
        if child.is_file() and child.name.split(".log")[0] + ".log" not in logs:
            child.unlink(missing_ok=True)


def _children(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except FileNotFoundError:
        return []
