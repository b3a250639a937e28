"""Device.SoftwareModules.InstallDU(), DeploymentUnit.{i}.Update() and Uninstall().

Each operation validates its arguments at once (a bad request fails the Operate), then
journals itself (record + OperationRecord) before it creates or removes anything, runs
in the background, and always ends with a DUStateChange! event:

* Install: journaled (status Installing, no row yet) → fetch/verify/unpack → DU and EU
  rows appear Installed. On failure no row ever appeared and no file is left (CurrentState
  Failed, DeploymentUnitRef empty: TR-181 DUStateChange!.CurrentState "Failed - The DU could
  not be installed in which case a DU instance MUST NOT be created in the Data Model").
* Update: the new bundle is unpacked and its container specs prepared beside the old one;
  running EUs are stopped, their data volumes copied aside, and the DU switches to the new
  bundle in one commit (stage "swapped"; the DU reads Updating until the update ends,
  volumes the update will remove are not mounted). The EUs that were Active start from it and must
  stay Active for ``update_settle_time`` seconds; then the update is "proven" and the old
  bundle and copies are removed. A failure before the swap leaves the old bundle in place;
  after it (the new EUs fail to start or exit while settling) the old records, bundle and
  data are restored and its EUs started again (stage "rollback"; the EUs show the reason as
  FailureOnStart). Either way: CurrentState Installed with a fault (7022 Command failure when
  the new version did not stay Active). After a crash recovery finishes a proven update
  and rolls back any other.
* Uninstall: EUs stopped and removed from the runtime, files removed, rows deleted.

Signatures: a ``Signature`` input goes to the packager with the ExecEnv's trusted signers
(its ``Signers`` rows), which verifies it before unpacking; the DU records the signer
(``X_RDKCENTRAL-COM_SignedBy``). An ExecEnv with ``require_signature`` fails an Install or
Update without a Signature with 7036 (Bad Signature: "a required signature is absent"),
after its one DUStateChange!; an ``oci://`` reference without one goes to the image
packager with the signers and the policy, which looks for a signature the registry stores
beside the image and refuses the DU only when there is none. DUs installed unsigned before the policy was turned on stay
installed and keep running; they can be uninstalled, and updated only with a signature.
Preinstalled DUs that ExecEnv Reset() restores come from the device's own configuration
and are exempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm import admission, euinputs, identity, monitoring, versions
from dsm_tr181.lcm.crashpoints import crashpoint
from dsm_tr181.lcm.endings import cleanup, ends_with
from dsm_tr181.lcm.ports import BundleInfo, LayerProgress, PackageSource
from dsm_tr181.lcm.records import AppDataRecord, DeploymentUnitRecord, ExecutionUnitRecord, OperationRecord
from dsm_tr181.lcm.states import DU, DuOutcome, DuRequest, DuStatus, EeRequest, EuFault, EuStatus, Operation, allow
from dsm_tr181.lcm.tables import DU_TABLE, EU_TABLE, INSTALL_DU, LOG_TABLE, as_int, from_stamp, now, stamp
from dsm_tr181.lcm.urls import display_url, served_url
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.datamodel import CommandCall
from dsm_tr181.tree.nodes import Node

if TYPE_CHECKING:
    from dsm_tr181.lcm.executions import Eu
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)

ROW = DU_TABLE + "{i}."
SIGNED_BY = "X_RDKCENTRAL-COM_SignedBy"  # vendor parameter (datamodel/regenerate.py)
DIGEST_FRAGMENT = "sha256="  # InstallDU(URL="https://host/app.tar#sha256=<hex>")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# A progress notification every 0.25 s at most (and at the start and the end): each wakes the
# event loop, which then competes with the packager's threads for the GIL; finer steps (one
# every 4 MiB besides) took a third of a 10 MB local install's unpacking time, for no visible gain.
PROGRESS_INTERVAL = 0.25


@dataclass(frozen=True)
class EuSettings:
    """What InstallDU() says of the EU it creates."""

    privileged: bool = False
    num_uids: int = 0  # NumRequiredUIDs; 0 = not given
    shutdown_delay: int = 10
    auto_restart: dict[str, Value] = field(default_factory=dict)  # AutoRestart.<name> by name
    inputs: euinputs.EuInputSettings = field(default_factory=euinputs.EuInputSettings)  # Resources, Env, HostObject


class Deployments:
    def __init__(self, lcm: Lcm) -> None:
        self.lcm = lcm
        self.records: dict[int, DeploymentUnitRecord] = {}
        self.installing: dict[int, DeploymentUnitRecord] = {}  # journaled installs: no row yet
        self._transfers: dict[int, asyncio.Task[object]] = {}  # installs still downloading, by DU instance
        self._cancelled: dict[int, Fault] = {}  # why a transfer was cancelled

    def install_hooks(self) -> None:
        dm = self.lcm.dm
        dm.on_command(INSTALL_DU, self._install_command)
        dm.on_command(ROW + "Update()", self._update_command)
        dm.on_command(ROW + "Uninstall()", self._uninstall_command)

    # -- rows -----------------------------------------------------------------------------------

    def add_row(self, du: DeploymentUnitRecord) -> Node:
        self.records[du.instance] = du
        return self.lcm.dm.add_row(DU_TABLE, self._values(du), number=du.instance)

    def _values(self, du: DeploymentUnitRecord) -> dict[str, Value]:
        eus = [eu.record for eu in self._units(du)]
        ee_known = du.ee in self.lcm.execenvs.records
        return {
            "UUID": du.uuid,
            "DUID": du.duid,
            "Alias": du.alias or f"cpe-{du.instance}",
            "Name": du.name,
            "Status": du.status,
            "Resolved": du.status == DuStatus.INSTALLED,
            "URL": du.url,
            "Description": du.description,
            "Vendor": du.vendor,
            "Version": du.version,
            "VendorLogList": tuple(f"{LOG_TABLE}{eu.log_row}" for eu in eus if eu.log_row),
            "ExecutionUnitList": tuple(f"{EU_TABLE}{eu.instance}" for eu in eus),
            "ExecutionEnvRef": self.lcm.execenvs.ref(du.ee) if ee_known else "",
            "Installed": from_stamp(du.installed),
            "LastUpdate": from_stamp(du.last_update),
            "ModuleVersion": du.module_version,
            SIGNED_BY: du.signed_by,
        }

    def refresh(self, du: DeploymentUnitRecord) -> None:
        self.lcm.dm.update(self.lcm.du_path(du), self._values(du))

    def drop(self, du: DeploymentUnitRecord) -> None:
        """Remove the DU's rows (EUs first) from the tree."""
        for eu in self._units(du):
            self.lcm.executions.remove(eu.record.instance)
        if self.lcm.dm.find_node(self.lcm.du_path(du)) is not None:
            self.lcm.dm.delete_row(self.lcm.du_path(du))
        self.records.pop(du.instance, None)

    # -- InstallDU() -----------------------------------------------------------------------------

    def _install_command(self, call: CommandCall) -> Awaitable[dict[str, Value]]:
        """Operate errors here are the request's own (README "Outcomes"): bad arguments (7004,
        7027), an unknown ExecEnv (7223), the same UUID already being installed (7226). What the
        ExecEnv's state or policy refuses is the operation's outcome: a DUStateChange! Failed."""
        self.lcm.check_open()
        args = call.args
        ee = self.lcm.execenvs.resolve(str(args.get("ExecutionEnvRef", "")))
        privileged = bool(args.get("Privileged", False))
        inputs = euinputs.parse(call)
        source = self._signed(
            _source(str(args["URL"]), str(args.get("Username", "")), str(args.get("Password", ""))),
            str(args.get("Signature", "")),
            ee,
        )
        given_uuid = str(args.get("UUID", "")).lower()
        refusal = self._install_refusal(args, ee, privileged) or self.lcm.networking.mode_refusal(
            ee, inputs.network_mode or ""
        )
        du, op = self._journal_install(source, ee, given_uuid, str(args.get("ModuleVersion", "")))
        eu_settings = EuSettings(
            privileged=privileged,
            num_uids=as_int(args.get("NumRequiredUIDs", 0)),
            shutdown_delay=as_int(args.get("ShutdownDelay", 10)),
            auto_restart={k.partition(".")[2]: v for k, v in args.items() if k.startswith("AutoRestart.")},
            inputs=inputs,
        )
        return self._install(du, op, source, given_uuid, eu_settings, call.request_id, refusal=refusal)

    def _install_refusal(self, args: dict[str, Value], ee: str, privileged: bool) -> Fault | None:
        """What the ExecEnv refuses (reported in the DUStateChange!), if anything."""
        try:
            self.lcm.execenvs.allow(ee, EeRequest.INSTALL)
        except Fault as fault:
            return fault
        if args.get("RequiredRoles") or args.get("RequiredUserRoles"):
            code = FaultCode.UNAVAILABLE_ROLE if args.get("RequiredRoles") else FaultCode.UNAVAILABLE_USER_ROLE
            return Fault(code, "the execution environment offers no roles")
        if privileged and not self.lcm.execenvs.settings[ee].confinement.allow_privileged:
            return Fault(FaultCode.REQUEST_DENIED, f"execution environment {ee!r} does not allow privileged units")
        return None

    def _signed(self, source: PackageSource, signature: str, ee: str) -> PackageSource:
        """``source`` with its Signature and the ExecEnv's trusted signers (syntax checked here);
        an image reference gets the signers without a Signature too (a registry-stored one)."""
        if not signature:
            if _is_registry_ref(source.url):
                return replace(source, signers=self.lcm.execenvs.trusted_signers(ee))
            return source
        try:
            parts = urlsplit(signature)
            userinfo = parts.username is not None or parts.password is not None
        except ValueError as exc:
            raise Fault(FaultCode.INVALID_ARGUMENTS, f"malformed Signature URL ({exc})") from None
        if parts.scheme.lower() != "data" and userinfo:
            raise Fault(FaultCode.INVALID_ARGUMENTS, "the Signature URL must not carry credentials (userinfo)")
        return replace(source, signature=signature, signers=self.lcm.execenvs.trusted_signers(ee))

    def _check_policy(self, du: DeploymentUnitRecord, source: PackageSource) -> PackageSource:
        if not self.lcm.execenvs.requires_signature(du.ee):
            return source
        if source.signature or _is_registry_ref(source.url):  # the packager checks, or looks for one
            return replace(source, require_signature=True)
        raise Fault(
            FaultCode.BAD_SIGNATURE,
            f"execution environment {du.ee!r} requires signed deployment units: no Signature given",
        )

    def _journal_install(
        self, source: PackageSource, ee: str, given_uuid: str, module_version: str
    ) -> tuple[DeploymentUnitRecord, OperationRecord]:
        if given_uuid and any(other.uuid == given_uuid for other in self.installing.values()):
            raise Fault(FaultCode.DUPLICATE_DU, "an installation of this deployment unit is under way")
        instance = self.lcm.dm.table(DU_TABLE).allocate()
        target = self.lcm.bundle_root(instance) / _generation()
        du = DeploymentUnitRecord(
            instance=instance,
            uuid=given_uuid,  # "" until the package names it (Annex C)
            ee=ee,
            status=DuStatus.INSTALLING,
            url=served_url(source.url),
            sealed_url=self._seal_url(source.url),
            duid=identity.duid(ee, instance),
            credentials=self._seal(source),
            module_version=module_version,
        )
        op = OperationRecord(du=instance, kind=Operation.INSTALL.kind, started=stamp(), target=str(target))
        self.lcm.commit(put=[du, op])  # journaled before any file exists
        self.installing[instance] = du
        return du, op

    async def _install(
        self,
        du: DeploymentUnitRecord,
        op: OperationRecord,
        source: PackageSource,
        given_uuid: str,
        eu_settings: EuSettings,
        request_id: str,
        *,
        exempt: bool = False,
        refusal: Fault | None = None,
    ) -> dict[str, Value]:
        started = now()
        target = Path(op.target)
        eu: ExecutionUnitRecord | None = None
        volumes: list[AppDataRecord] = []

        async def abandon(fault: Fault) -> None:
            self._transfers.pop(du.instance, None)  # cancelled while queued for a slot
            why = self._cancelled.pop(du.instance, None)  # its ExecEnv was disabled meanwhile
            await self.lcm.appdata.discard(volumes)
            await self._abandon_install(du, op, started, why or fault, request_id)

        self._transfers[du.instance] = asyncio.current_task()  # type: ignore[assignment]  # always a task
        try:
            async with ends_with("installation", abandon), self.lcm.operation():
                if refusal is not None:
                    raise refusal
                crashpoint("install.journaled")
                try:
                    info = await self._unpack(du, source, target, request_id, exempt=exempt)
                finally:
                    self._transfers.pop(du.instance, None)  # past the transfer, Uninstall() waits its turn
                crashpoint("install.unpacked")
                meta = self._metadata(info)
                du.uuid = given_uuid or identity.annex_c_uuid(meta["name"], meta["vendor"])
                self._check_duplicate(du.uuid, meta["version"], du.ee, du.instance)
                eu = self._new_eu(du, meta, eu_settings)
                admission.check_disk(self.lcm, du, [eu], info.disk_usage_kib)
                self.lcm.networking.check(eu)
                self.lcm.networking.allocate(eu)
                volumes = await self.lcm.appdata.provide(du, eu_settings.inputs.volumes)
                crashpoint("install.volumes")
                self.lcm.confinement.reserve(eu, eu_settings.num_uids)
                await asyncio.to_thread(self.lcm.confinement.prepare, eu, target)
                if not exempt:  # disabled while it downloaded: it fails as if disabled before
                    self.lcm.execenvs.allow(du.ee, EeRequest.INSTALL)
                du.status = self._move(du, DuRequest.COMPLETE)
                _describe(du, meta)
                du.bundle, du.digest, du.disk_kib = str(target), info.digest, info.disk_usage_kib
                du.signed_by = info.signed_by
                du.installed = du.last_update = stamp()
                du.eus = [eu.instance]
                event = self.lcm.outcome(du, Operation.INSTALL, DuOutcome.INSTALLED, started)
                # the outcome survives a crash from here
                self.lcm.commit(put=[du, eu, event, *self.lcm.appdata.ready(volumes)], delete=[op])
                crashpoint("install.committed")
        finally:
            if eu is not None:
                self.lcm.confinement.release(eu)
        self.installing.pop(du.instance, None)
        self.lcm.executions.add(eu, du.disk_kib)
        self.add_row(du)
        log.info("installed DU %s %s %s in %s", du.instance, du.name, du.version, du.ee)
        if await monitoring.shares_parts(self.lcm, target):  # the new DU may share layers with others
            await monitoring.sample_shared(self.lcm)
        self.lcm.outcomes.deliver(event, committed=True)
        return {"UUID": du.uuid, "Version": du.version, "ExecEnvRef": self.lcm.execenvs.ref(du.ee)}

    async def _abandon_install(
        self, du: DeploymentUnitRecord, op: OperationRecord, started: datetime, fault: Fault, request_id: str
    ) -> None:
        log.warning("installation of %s failed: %s", display_url(du.url), fault)
        await cleanup(
            f"installation of DU {du.instance}",
            lambda: self.lcm.packager.remove(Path(op.target)),
            lambda: _remove_empty(self.lcm.bundle_root(du.instance)),
            lambda: self.lcm.commit(delete=[du, op], keep_changes=True),
            lambda: self.installing.pop(du.instance, None),
            # a failed install names no DU: the request id tells a waiting client the event is its own
            lambda: self.lcm.du_state_change(du, Operation.INSTALL, DuOutcome.FAILED, started, fault, request_id),
        )

    def _new_eu(self, du: DeploymentUnitRecord, meta: dict[str, str], settings: EuSettings) -> ExecutionUnitRecord:
        dm = self.lcm.dm
        instance = dm.table(EU_TABLE).allocate()
        euid = identity.euid(du.ee, instance)
        level = self.lcm.execenvs.records[du.ee].initial_eu_run_level
        record = ExecutionUnitRecord(
            instance=instance,
            du=du.instance,
            euid=euid,
            container_id=euid,
            ee=du.ee,
            name=meta["name"],
            vendor=meta["vendor"],
            version=meta["version"],
            description=meta["description"],
            run_level=max(level, 0),
            shutdown_delay=settings.shutdown_delay,
            privileged=settings.privileged,
            creation_time=stamp(),
            log_file=str(self.lcm.settings.log_dir / f"{euid}.log"),
            log_row=dm.table(LOG_TABLE).allocate(),
            auto_restart=dict(settings.auto_restart),
        )
        settings.inputs.store(record)
        return record

    async def install_local(self, url: str, ee: str) -> None:
        """Install a DU as the device itself does (preinstalled DUs restored by Reset())."""
        source = _source(url, "", "")
        du, op = self._journal_install(source, ee, "", "")
        try:
            await self._install(du, op, source, "", EuSettings(), "", exempt=True)
        except Fault as fault:
            log.error("could not restore preinstalled DU %s: %s", url, fault)

    # -- Update() --------------------------------------------------------------------------------

    def _update_command(self, call: CommandCall) -> Awaitable[dict[str, Value]]:
        self.lcm.check_open()
        du = self.records[call.node.number]
        allow(DU, DuStatus(du.status), DuRequest.UPDATE, self.lcm.du_path(du))
        refusal = self._ee_refusal(du, EeRequest.UPDATE)
        args = call.args
        url = str(args.get("URL") or self._full_url(du))
        username, password = str(args.get("Username", "")), str(args.get("Password", ""))
        if not username and not password and du.credentials and url == self._full_url(du):
            username, password = self._unseal(du)
        source = self._signed(_source(url, username, password), str(args.get("Signature", "")), du.ee)
        inputs = euinputs.parse(call)
        if refusal is None and inputs.network_mode:
            refusal = self.lcm.networking.mode_refusal(du.ee, inputs.network_mode)
        op = OperationRecord(
            du=du.instance,
            kind=Operation.UPDATE.kind,
            started=stamp(),
            target=str(self.lcm.bundle_root(du.instance) / _generation()),
            previous=du.bundle,
            retain_data=inputs.retain_data,
            named_volumes=[v.name for v in inputs.volumes],
        )
        du.status = self._move(du, DuRequest.UPDATE)
        self.lcm.commit(put=[du, op])
        self.refresh(du)
        return self._update(du, op, source, inputs, call.request_id, refusal)

    async def _update(
        self,
        du: DeploymentUnitRecord,
        op: OperationRecord,
        source: PackageSource,
        inputs: euinputs.EuInputSettings,
        request_id: str,
        refusal: Fault | None = None,
    ) -> dict[str, Value]:
        started = now()
        stopped: list[int] = []
        volumes: list[AppDataRecord] = []

        async def abandon(fault: Fault) -> None:
            if op.stage == "journaled":
                await self.lcm.appdata.discard(volumes)
                await self._abandon_update(du, op, stopped, started, fault)
            else:  # the new version was the DU's: the old one comes back (or, if that fails
                # here, at the next start: the operation stays journaled)
                await cleanup(
                    f"rollback of the update of DU {du.instance}",
                    lambda: self.roll_back(du, op),
                    lambda: self.lcm.du_state_change(du, Operation.UPDATE, DuOutcome.INSTALLED, started, fault),
                )

        async with ends_with("update", abandon), self.lcm.operation():
            if refusal is not None:
                raise refusal
            crashpoint("update.journaled")
            info = await self._unpack(du, source, Path(op.target), request_id)
            crashpoint("update.unpacked")
            meta = self._metadata(info)
            self._check_identity(du, meta)
            self._check_version(du, meta["version"])
            updated = [replace(unit.record) for unit in self._units(du)]  # the inputs apply on success only
            for record in updated:
                inputs.store(record)
            admission.check_disk(self.lcm, du, updated, info.disk_usage_kib)
            for record in updated:
                self.lcm.networking.check(record)
                self.lcm.networking.allocate(record)
            volumes[:] = await self.lcm.appdata.provide(du, inputs.volumes)
            # Everything of the new version is ready before the old one stops: the swap is
            # stop-old + start-new only (bench/update_bench.py measures the service's downtime).
            leaving = self.lcm.appdata.leaving(du, set(op.named_volumes), op.retain_data)  # not for the new version
            for record in updated:
                await asyncio.to_thread(self.lcm.confinement.prepare, record, Path(op.target), leaving)
            stopped[:] = await self._stop_eus(du, op)
            crashpoint("update.stopped")
            fresh = {r.key() for r in volumes}
            kept = [r for r in self.lcm.appdata.of(du) if r.key() not in fresh]
            await self.lcm.appdata.snapshot(kept, data_snapshot(op))
            eus = [eu.record for eu in self._units(du)]
            op.old = {"du": du.to_json(), "eus": [record.to_json() for record in eus], "volumes": sorted(fresh)}
            for record, checked in zip(eus, updated, strict=True):
                inputs.store(record)
                record.network_mode, record.address = checked.network_mode, checked.address
            _describe(du, meta)
            for described in eus:
                _describe(described, meta)
            du.bundle, du.digest, du.disk_kib = op.target, info.digest, info.disk_usage_kib
            du.signed_by = info.signed_by
            du.url, du.sealed_url = served_url(source.url), self._seal_url(source.url)
            du.credentials, du.last_update = self._seal(source), stamp()
            op.stage = "swapped"  # the DU stays Updating while the new version is on trial
            self.lcm.commit(put=[du, *eus, op, *self.lcm.appdata.ready(volumes)])
            crashpoint("update.swapped")
            self._show(du, op)
            await self.lcm.appdata.wipe_for_update(du, set(op.named_volumes), op.retain_data)
            await self._prove(du, op)
            du.status = self._move(du, DuRequest.COMPLETE)
            op.stage = "proven"
            self.lcm.commit(put=[du, op])
            crashpoint("update.proven")
            self.refresh(du)
        await self.finish_update(du, op)
        self.lcm.du_state_change(du, Operation.UPDATE, DuOutcome.INSTALLED, started)
        return {}

    async def _prove(self, du: DeploymentUnitRecord, op: OperationRecord) -> None:
        """The EUs that were Active start from the new bundle and must stay Active for
        ``update_settle_time`` seconds; Fault 7022 (Command failure) with why otherwise."""
        units = [eu for eu in self._units(du) if eu.record.instance in op.restart_eus]
        for eu in units:
            self.lcm.executions.request(eu, EuStatus.ACTIVE)  # a failure reads FailureOnStart
        for eu in units:
            await self.lcm.executions.wait(eu)
        starts = {eu.record.instance: eu.started for eu in units if eu.running}
        if units and len(starts) == len(units):
            crashpoint("update.started")
            settle = self.lcm.settings.update_settle_time
            deadline = time.monotonic() + settle
            while time.monotonic() < deadline and all(eu.running for eu in units):
                await asyncio.sleep(min(0.1, settle))
        for eu in units:  # an exit during the settle time may already have been restarted: not proven
            if not eu.running or eu.started != starts.get(eu.record.instance):
                record = eu.record
                raise Fault(
                    FaultCode.COMMAND_FAILURE,
                    f"execution unit {record.euid} of version {record.version} did not stay Active: "
                    f"{record.fault_code}: {record.fault_message}",
                )

    async def roll_back(self, du: DeploymentUnitRecord, op: OperationRecord, *, start: bool = True) -> None:
        """The new version failed (or its update was interrupted) after the swap: stop it and
        bring back the old bundle, records, data and running EUs (also run by recovery, which
        only marks the EUs wanted Active: ``start`` false)."""
        why = ""
        if op.stage != "rollback":
            failed = [eu.record for eu in self._units(du) if eu.record.fault_code != EuFault.NO_FAULT]
            why = "; ".join(f"{r.euid}: {r.fault_code}: {r.fault_message}" for r in failed)
            op.stage = "rollback"
            self.lcm.commit(put=[op])
        log.warning("update of DU %s: rolling back to %s", du.instance, op.old["du"].get("version", "?"))
        crashpoint("update.rollback")
        for eu in self._units(du):
            await self.lcm.executions.stop_and_keep(eu)
        old_du = DeploymentUnitRecord.from_json(op.old["du"])
        for name in (f.name for f in fields(DeploymentUnitRecord)):
            setattr(du, name, getattr(old_du, name))
        du.status = self._move(du, DuRequest.FAIL)  # the old record says Updating
        eus = [eu.record for eu in self._units(du)]
        olds = {data["instance"]: ExecutionUnitRecord.from_json(data) for data in op.old["eus"]}
        for record in eus:
            old = olds.get(record.instance)
            if old is not None:
                for name in (f.name for f in fields(ExecutionUnitRecord)):
                    setattr(record, name, getattr(old, name))
        fresh = set(op.old.get("volumes", []))
        await self.lcm.appdata.discard([r for r in self.lcm.appdata.of(du) if r.key() in fresh])
        await self.lcm.appdata.restore_snapshot(data_snapshot(op))
        self.lcm.commit(put=[du, *eus])
        crashpoint("update.restored")
        self._show(du, op)
        for eu in self._units(du):
            if eu.record.instance in op.restart_eus:
                if start:
                    self.lcm.executions.request(eu, EuStatus.ACTIVE, cause="auto")
                else:
                    self.lcm.executions.want(eu, EuStatus.ACTIVE)
        for eu in self._units(du):
            await self.lcm.executions.wait(eu)
            if why and eu.record.instance in op.restart_eus:  # the operator reads why on the EU
                self.lcm.executions.note_fault(eu, EuFault.FAILURE_ON_START, f"update rolled back: {why}")
        await self.lcm.packager.remove(Path(op.target))
        await self.lcm.appdata.drop_snapshot(data_snapshot(op))
        self.lcm.commit(delete=[op])
        await monitoring.sample_shared(self.lcm)  # the old bundle's layers again, the new one's released

    async def finish_update(self, du: DeploymentUnitRecord, op: OperationRecord) -> None:
        """The new version is proven: drop the old bundle, snapshot and retired volumes (also
        run by recovery, where the EUs recover() finds wanted Active start again)."""
        await self.lcm.appdata.after_update(du, set(op.named_volumes), op.retain_data)
        if op.previous and op.previous != du.bundle:
            await self.lcm.packager.remove(Path(op.previous))
        await self.lcm.appdata.drop_snapshot(data_snapshot(op))
        self.lcm.commit(delete=[op])
        log.info("updated DU %s to %s", du.instance, du.version)
        await monitoring.sample_shared(self.lcm)  # the new bundle's layers, the old one's released

    def _show(self, du: DeploymentUnitRecord, op: OperationRecord) -> None:
        """The DU's and its EUs' rows as their records now say."""
        self.refresh(du)
        for eu in self._units(du):
            record = eu.record
            self.lcm.dm.update(
                self.lcm.executions.node(eu),
                {
                    "Name": record.name,
                    "Vendor": record.vendor,
                    "Version": record.version,
                    "Description": record.description,
                    "DiskSpaceInUse": du.disk_kib,
                    **self.lcm.executions.allocations(record),
                },
            )
            self.lcm.executions.input_rows(record)

    async def _abandon_update(
        self, du: DeploymentUnitRecord, op: OperationRecord, stopped: list[int], started: datetime, fault: Fault
    ) -> None:
        log.warning("update of DU %s failed: %s", du.instance, fault)
        du.status = self._move(du, DuRequest.FAIL)

        def restart() -> None:
            for instance in stopped:
                eu = self.lcm.executions.units.get(instance)
                if eu is not None:
                    self.lcm.executions.request(eu, EuStatus.ACTIVE, cause="auto")

        await cleanup(
            f"update of DU {du.instance}",
            lambda: self.lcm.packager.remove(Path(op.target)),
            lambda: self.lcm.appdata.drop_snapshot(data_snapshot(op)),
            lambda: self.lcm.commit(put=[du], delete=[op], keep_changes=True),
            lambda: self.refresh(du),
            restart,
            lambda: self.lcm.du_state_change(du, Operation.UPDATE, DuOutcome.INSTALLED, started, fault),
        )

    def _check_identity(self, du: DeploymentUnitRecord, meta: dict[str, str]) -> None:
        """An Update installs a new version of the same DU: the package's Name and Vendor (which
        TR-181 Annex C derives the DU's UUID from) must be this DU's. A package of another DU is,
        for this row, an unknown deployment unit (CWMP 9028)."""
        if (meta["name"], meta["vendor"]) != (du.name, du.vendor):
            theirs = identity.annex_c_uuid(meta["name"], meta["vendor"])
            raise Fault(
                FaultCode.UNKNOWN_DU,
                f"the package is {meta['name']!r} by {meta['vendor']!r} (UUID {theirs}), "
                f"not {du.name!r} by {du.vendor!r}: an update must keep the deployment unit's identity",
            )

    def _check_version(self, du: DeploymentUnitRecord, version: str) -> None:
        order = versions.compare(version, du.version)
        if order == 0:
            raise Fault(FaultCode.DUPLICATE_DU, f"version {version!r} is the one installed")
        self._check_duplicate(du.uuid, version, du.ee, du.instance)
        if order < 0 and not self.lcm.settings.allow_downgrade:
            raise Fault(FaultCode.DOWNGRADE_NOT_PERMITTED, f"{version!r} is older than {du.version!r}")

    async def _stop_eus(self, du: DeploymentUnitRecord, op: OperationRecord) -> list[int]:
        """Stop the running EUs, journaling which ones to start again."""
        units = self._units(du)
        active = [eu.record.instance for eu in units if eu.running or eu.record.requested_state == EuStatus.ACTIVE]
        if active:
            op.restart_eus = active
            self.lcm.commit(put=[op])
        for eu in units:
            if eu.record.instance in active:
                self.lcm.executions.request(eu, EuStatus.IDLE)
        for eu in units:
            await self.lcm.executions.wait(eu)
            if eu.running:
                raise Fault(FaultCode.COMMAND_FAILURE, f"execution unit {eu.record.euid} did not stop")
        return active

    # -- Uninstall() ------------------------------------------------------------------------------

    def _uninstall_command(self, call: CommandCall) -> Awaitable[dict[str, Value]]:
        self.lcm.check_open()
        du = self.records[call.node.number]
        allow(DU, DuStatus(du.status), DuRequest.UNINSTALL, self.lcm.du_path(du))
        refusal = self._ee_refusal(du, EeRequest.UNINSTALL)
        op = self._journal_uninstall(du, bool(call.args.get("RetainData", False)))
        return self._uninstall(du, op, refusal)

    def _journal_uninstall(self, du: DeploymentUnitRecord, retain_data: bool = False) -> OperationRecord:
        op = OperationRecord(
            du=du.instance,
            kind=Operation.UNINSTALL.kind,
            started=stamp(),
            previous=du.bundle,
            retain_data=retain_data,
        )
        du.status = self._move(du, DuRequest.UNINSTALL)
        self.lcm.commit(put=[du, op])
        self.refresh(du)
        return op

    async def _uninstall(
        self, du: DeploymentUnitRecord, op: OperationRecord, refusal: Fault | None = None
    ) -> dict[str, Value]:
        started = now()

        async def abandon(fault: Fault) -> None:
            log.warning("uninstall of DU %s failed: %s", du.instance, fault)
            du.status = self._move(du, DuRequest.FAIL)
            await cleanup(
                f"uninstall of DU {du.instance}",
                lambda: self.lcm.commit(put=[du], delete=[op], keep_changes=True),
                lambda: self.refresh(du),
                lambda: self.lcm.du_state_change(du, Operation.UNINSTALL, DuOutcome.INSTALLED, started, fault),
            )

        async with ends_with("uninstall", abandon), self.lcm.operation(removal=True):
            if refusal is not None:
                raise refusal
            crashpoint("uninstall.journaled")
            shared = await monitoring.shares_parts(self.lcm, Path(du.bundle))
            await self.finish_uninstall(du, op)
        if shared:  # its layers now fall to fewer DUs
            await monitoring.sample_shared(self.lcm)
        self.lcm.du_state_change(du, Operation.UNINSTALL, DuOutcome.UNINSTALLED, started)
        return {}

    async def finish_uninstall(self, du: DeploymentUnitRecord, op: OperationRecord) -> None:
        """Stop and remove the containers, the files and the rows (also run by recovery)."""
        units = self._units(du)
        for unit in units:
            await self.lcm.executions.stop_and_forget(unit)
        crashpoint("uninstall.stopped")
        await self.lcm.appdata.release(du, op.retain_data)
        await self.lcm.packager.remove(self.lcm.bundle_root(du.instance))
        eus = [unit.record for unit in units]
        for eu in eus:
            for log_file in Path(eu.log_file).parent.glob(Path(eu.log_file).name + "*"):
                log_file.unlink(missing_ok=True)
        crashpoint("uninstall.removed")
        self.lcm.commit(delete=[*eus, du, op])
        self.drop(du)
        log.info("uninstalled DU %s %s", du.instance, du.name)

    async def uninstall_all(self, ee: str) -> None:
        """Uninstall every DU of ``ee`` (ExecEnv Reset()), each with its event."""
        for du in [d for d in self.records.values() if d.ee == ee and d.status == DuStatus.INSTALLED]:
            try:
                await self._uninstall(du, self._journal_uninstall(du))
            except Fault:
                continue

    def record_of(self, instance: int) -> DeploymentUnitRecord | None:
        """DU ``instance``, installed or still installing (which has no row yet)."""
        return self.records.get(instance) or self.installing.get(instance)

    def cancel_transfers(self, ee: str) -> None:
        """ExecEnv.Enable=false: the installs into it still downloading end now (DUStateChange!
        Failed, 7012 Disabled Execution Environment). TR-181 has no cancel, and an Installing DU
        has no row (README "Outcomes"): this is how an operator ends a stuck transfer."""
        for instance, task in list(self._transfers.items()):
            du = self.installing.get(instance)
            if du is not None and du.ee == ee:
                log.warning("execution environment %s disabled: cancelling the installation of DU %s", ee, instance)
                self._cancelled[instance] = Fault(FaultCode.DISABLED_EE, f"execution environment {ee!r} was disabled")
                task.cancel()

    # -- shared -------------------------------------------------------------------------------------

    def _units(self, du: DeploymentUnitRecord) -> list[Eu]:
        """The DU's EUs that have rows."""
        units = self.lcm.executions.units
        return [units[n] for n in du.eus if n in units]

    def _move(self, du: DeploymentUnitRecord, request: DuRequest) -> DuStatus:
        """The DU's next status by states.DU (only an Installed DU accepts Update/Uninstall)."""
        answer = allow(DU, DuStatus(du.status), request, self.lcm.du_path(du))
        return DuStatus.INSTALLED if answer.state is None else answer.state

    def _ee_refusal(self, du: DeploymentUnitRecord, request: EeRequest) -> Fault | None:
        """TR-181 ExecEnv.Enable: an Update or Uninstall "attempted on a DeploymentUnit that is to
        be applied against a disabled ExecEnv ... fails and the associated event will contain a
        FaultStruct": accepted, then failed with its DUStateChange!."""
        try:
            self.lcm.execenvs.allow(du.ee, request)
        except Fault as fault:
            return fault
        return None

    def _check_duplicate(self, uuid: str, version: str, ee: str, instance: int) -> None:
        for other in (*self.records.values(), *self.installing.values()):
            if other.instance != instance and (other.uuid, other.version, other.ee) == (uuid, version, ee):
                raise Fault(
                    FaultCode.DUPLICATE_DU,
                    f"{self.lcm.du_path(other)} is the same deployment unit and version ({version!r})",
                )

    def _metadata(self, info: BundleInfo) -> dict[str, str]:
        """Name, vendor, version and description from the bundle, checked against the model."""
        row = self.lcm.dm.schema.objects[ROW]
        meta = {"name": info.name, "vendor": info.vendor, "version": info.version, "description": info.description}
        for key, value in meta.items():
            try:
                row.parameters[key.title()].type.check(value)
            except Fault as fault:
                raise Fault(FaultCode.CORRUPT_DATA, f"bundle {key}: {fault.message}") from None
        return meta

    async def _unpack(
        self, du: DeploymentUnitRecord, source: PackageSource, target: Path, request_id: str, *, exempt: bool = False
    ) -> BundleInfo:
        """Fetch and unpack ``source`` into ``target``; first refuse an unsigned DU where the
        ExecEnv requires signatures (unless ``exempt``), once the operation has shown its DU."""
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        lock = threading.Lock()
        last = [-math.inf]  # monotonic time of the last notification

        def progress(done: int, total: int | None, layer: LayerProgress | None = None, /) -> None:
            # called from the packager's thread; a layer's start and end are always reported
            edge = layer is not None and layer.done in (0, layer.total)
            with lock:
                soon = time.monotonic() - last[0] < PROGRESS_INTERVAL
                if soon and done != total and not edge:
                    return
                last[0] = time.monotonic()
            known = -1 if total is None else total
            loop.call_soon_threadsafe(self.lcm.progress, du, request_id, "download", done, known, layer)

        self.lcm.progress(du, request_id, "download")
        if not exempt:
            source = self._check_policy(du, source)
        try:
            info = await asyncio.wait_for(
                self.lcm.packager.unpack(source, target, progress), self.lcm.settings.operation_timeout
            )
        except TimeoutError:
            raise Fault(FaultCode.DOWNLOAD_INCOMPLETE, "the download did not complete in time") from None
        self.lcm.progress(du, request_id, "unpacked", info.disk_usage_kib * 1024, info.disk_usage_kib * 1024)
        return info

    def _unseal(self, du: DeploymentUnitRecord) -> tuple[str, str]:
        """The stored Username and Password of ``du`` (refused when the device key changed)."""
        username, _, password = self._unsealed(du.credentials, "give Username and Password").partition("\0")
        return username, password

    def _full_url(self, du: DeploymentUnitRecord) -> str:
        """The URL ``du`` came from, with the query ``URL`` does not serve."""
        return self._unsealed(du.sealed_url, "give the URL") if du.sealed_url else du.url

    def _unsealed(self, sealed: str, remedy: str) -> str:
        try:
            return self.lcm.sealer.unseal(sealed)
        except ValueError:
            raise Fault(
                FaultCode.REQUEST_DENIED,
                "the stored credentials of this deployment unit cannot be decrypted "
                f"(the device key changed): {remedy}",
            ) from None

    def _seal_url(self, url: str) -> str:
        """The full URL sealed when ``URL`` serves less of it (a query may be a pre-signed token)."""
        return self.lcm.sealer.seal(url) if served_url(url) != url else ""

    def _seal(self, source: PackageSource) -> str:
        if not source.username and not source.password:
            return ""
        return self.lcm.sealer.seal(f"{source.username}\0{source.password}")


def _is_registry_ref(url: str) -> bool:
    """An ``oci://`` image reference, whose registry may hold the image's signature."""
    return url[:6].lower() == "oci://"


def _source(url: str, username: str, password: str) -> PackageSource:
    """What to fetch; a ``#sha256=<hex>`` fragment is the archive's expected digest, checked before unpacking."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"malformed URL ({exc})") from None
    if parts.username is not None or parts.password is not None:
        raise Fault(FaultCode.INVALID_ARGUMENTS, "the URL must not carry credentials (userinfo)")
    digest = ""
    if parts.fragment.startswith(DIGEST_FRAGMENT):
        hexdigest = parts.fragment[len(DIGEST_FRAGMENT) :]
        if not _SHA256_HEX.fullmatch(hexdigest):
            raise Fault(FaultCode.INVALID_ARGUMENTS, f"URL fragment #{DIGEST_FRAGMENT}: not 64 hex digits")
        url, digest = url.rpartition("#")[0], "sha256:" + hexdigest.lower()
    return PackageSource(url=url, username=username, password=password, digest=digest)


def _describe(record: DeploymentUnitRecord | ExecutionUnitRecord, meta: dict[str, str]) -> None:
    """Name, Vendor, Version and Description from the bundle (see _metadata)."""
    record.name, record.vendor, record.version, record.description = (
        meta["name"], meta["vendor"], meta["version"], meta["description"]
    )  # fmt: skip


def _generation() -> str:
    """A fresh bundle directory name: time-ordered, unique."""
    return f"g{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"


def data_snapshot(op: OperationRecord) -> Path:
    """Where an Update keeps the snapshot of the DU's data volumes until it is proven."""
    target = Path(op.target)
    return target.with_name(target.name + ".data")


def _remove_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()
