"""The device side of fleet targeting, inside the daemon (``[fleet] enable = true``).

Every poll (interval ± jitter) posts the device's labels to ``/v1/resolve`` with the last
ETag; an unchanged answer on a converged device costs nothing more. Otherwise it converges,
acting only as a controller would, through the DataModel's Operate:
``InstallDU()`` (with a UUID of its own per app, so a retried install after a crash finds the
DU instead of making a second one), ``DeploymentUnit.{i}.Update()`` when the app's package
changed, ``Uninstall()`` for apps no longer wanted, ``ExecutionUnit.{i}.SetRequestedState()``
for the run intent. So each step is journaled by the LCM, crash-safe and announced with
``DUStateChange!`` on every bus. Only DUs in its own journal (:mod:`ownership`) are touched.
Apps the repository could not decide (tie, conflict) are left as they are and reported; an
app whose packages are all gone ("nomatch") is uninstalled, and reported. A failed step is
retried with exponential backoff; the outcome is reported to the repository and shown in
``Device.SoftwareModules.X_RDK_Fleet.``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.fleet.client import FleetApiError, FleetClient
from dsm_tr181.fleet.model import FleetError, labels_text, parse_labels
from dsm_tr181.fleet.ownership import Owned, Ownership, du_uuid
from dsm_tr181.fleet.settings import FleetSettings
from dsm_tr181.lcm.tables import DU_TABLE, EE_TABLE, INSTALL_DU, SM, stamp
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.nodes import Node

log = logging.getLogger("dsm.fleet")
FLEET = SM + "X_RDK_Fleet."
ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}
MOVING = ("Starting", "Stopping", "Restarting")  # EU states on the way to Active or Idle


class FleetAgent:
    def __init__(self, settings: FleetSettings, dm: DataModel, state_dir: Path) -> None:
        self.settings, self.dm = settings, dm
        self.ownership = Ownership(state_dir / "fleet.json")
        self.token = settings.token_file.read_text().strip() if settings.token_file else ""
        overrides = self.ownership.overrides
        self.enabled = bool(overrides.get("Enable", settings.enable))
        self.url = str(overrides.get("URL", settings.url))
        self.labels = str(overrides.get("Labels", settings.labels))
        self._etag = ""
        self._answer: dict[str, Any] | None = None
        self._settled = False  # the last convergence of the current answer had no failure
        self._failures_in_row = 0
        self._asked: set[str] = set()  # EUs this sync asked to start (see _moving)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tree = dm.find_node(FLEET) is not None
        if self._tree:
            dm.on_set(FLEET + "Enable", apply=self._changed)
            dm.on_set(FLEET + "URL", validate=_check_url, apply=self._changed)
            dm.on_set(FLEET + "Labels", validate=_check_labels, apply=self._changed)
            self._show(Enable=self.enabled, URL=self.url, Labels=self.labels, Status="Disabled")

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fleet")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                delay = await self.sync_once()
            except Exception:  # the client must outlive any surprise; it is reported and retried
                log.exception("fleet synchronisation failed")
                delay = self._backoff("internal error, see the daemon log")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # -- one poll ---------------------------------------------------------------------------------------

    async def sync_once(self) -> float:
        if not self.enabled:
            self._show(Status="Disabled")
            return self.settings.interval
        labels = self.device_labels()
        client = FleetClient(self.url, self.token, str(self.settings.ca_file or ""), self.settings.timeout)
        headers = {"If-None-Match": self._etag} if self._etag and self._answer is not None else {}
        try:
            reply = await asyncio.to_thread(client.request, "POST", "/v1/resolve", {"labels": labels}, headers)
        except FleetApiError as exc:
            return self._backoff(f"repository: {exc}")
        if reply.status == 200:
            self._answer, self._etag, self._settled = reply.json(), reply.headers.get("etag", ""), False
        assert self._answer is not None
        problems = [p["message"] for p in self._answer.get("problems", [])]
        if self._settled and not (drifted := self.intent_failures(self._answer)):
            self._failures_in_row = 0
            self._show(LastSync=stamp(), Status="Error" if problems else "Converged", LastError="; ".join(problems))
            return self._jittered(self.settings.interval)
        if self._settled:  # an EU left its run intent since (it died, or was stopped): converge again
            log.warning("fleet: %s", "; ".join(f["message"] for f in drifted))
        self._show(Status="Syncing")
        failures = await self.converge(self._answer)
        if not failures:  # Converged means running as the spec says, not only asked to
            failures = await self.await_intents(self._answer)
        report = {"installed": self.installed(), "failures": failures}
        try:
            await asyncio.to_thread(client.request, "POST", "/v1/devices/self/state", report)
        except FleetApiError as exc:
            failures.append({"app": "", "message": f"report: {exc}"})
        if failures:
            return self._backoff("; ".join(f["message"] for f in failures + [{"message": m} for m in problems]))
        self._settled, self._failures_in_row = True, 0
        self._show(LastSync=stamp(), Status="Error" if problems else "Converged", LastError="; ".join(problems))
        return self._jittered(self.settings.interval)

    def device_labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        if self.settings.derived_labels:
            labels["arch"] = ARCHES.get(platform.machine(), platform.machine())
            ee = self._execenv()
            if ee is not None:
                labels["execenv"] = str(ee.values["Name"])
            firmware = self.settings.firmware_key or _image_name(Path("/version.txt"))
            if firmware:
                labels["firmware"] = firmware
        return labels | dict(parse_labels(self.labels))

    def installed(self) -> list[dict[str, str]]:
        out = []
        for entry in sorted(self.ownership.entries.values(), key=lambda e: e.app):
            du = self._du(entry.uuid)
            if entry.phase == "installed" and du is not None:
                out.append({"app": entry.app, "package": entry.package, "uuid": entry.uuid,
                            "version": str(du.values.get("Version", ""))})  # fmt: skip
        return out

    # -- convergence --------------------------------------------------------------------------------------

    async def converge(self, answer: Mapping[str, Any]) -> list[dict[str, str]]:
        failures: list[dict[str, str]] = []
        wanted = {app["name"]: app for app in answer.get("apps", [])}
        # a tie or a conflict leaves the app as it is; an app with no package left is removed
        undecided = {p["app"] for p in answer.get("problems", []) if p["kind"] in ("tie", "conflict")}
        for app in sorted(set(self.ownership.entries) - set(wanted) - undecided):
            try:
                await self._uninstall(self.ownership.entries[app])
            except Fault as fault:
                failures.append({"app": app, "message": f"uninstall {app}: {fault}"})
        for app, want in sorted(wanted.items()):
            try:
                await self._apply(app, want)
            except Fault as fault:
                failures.append({"app": app, "message": f"{app}: {fault}"})
        return failures

    async def _apply(self, app: str, want: Mapping[str, Any]) -> None:
        entry = self.ownership.entries.get(app)
        uuid = du_uuid(app)
        du = self._du(uuid)
        # the device token goes only to the repository, never to where a package by reference lives
        credentials = {"Username": "fleet", "Password": self.token} if _origin(want["url"]) == _origin(self.url) else {}
        if du is None:
            self.ownership.put(Owned(app, uuid, want["package"], want["sha256"], want["url"], "installing"))
            ee = self._execenv()
            args = {"URL": want["url"], "UUID": uuid, **credentials}
            if ee is not None:
                args["ExecutionEnvRef"] = ee.path.rstrip(".")
            log.info("fleet: installing %s (%s)", app, want["package"])
            await self._operate(INSTALL_DU, args)
            du = self._du(uuid)
        elif entry is None:
            raise Fault(FaultCode.COMMAND_FAILURE, f"DU {uuid} exists but was not installed by the fleet client")
        elif (status := du.values.get("Status")) != "Installed":
            raise Fault(FaultCode.COMMAND_FAILURE, f"DU {du.path} is {status!s}; retrying later")
        elif self._update_pending(entry, du, want):
            self.ownership.put(Owned(app, uuid, want["package"], want["sha256"], want["url"], "updating"))
            log.info("fleet: updating %s to %s", app, want["package"])
            await self._operate(du.path + "Update()", {"URL": want["url"], **credentials})
        if du is None:
            raise Fault(FaultCode.INTERNAL_ERROR, f"DU {uuid} is not in the tree after its installation")
        self.ownership.put(Owned(app, uuid, want["package"], want["sha256"], want["url"], "installed"))
        await self._run_intent(du, bool(want.get("start", True)))

    @staticmethod
    def _update_pending(entry: Owned, du: Node, want: Mapping[str, Any]) -> bool:
        """An Update() is due: the package changed, or an Update() announced in the journal did
        not complete (the DU does not come from its URL yet: it failed, or the daemon died)."""
        if entry.sha256 != want["sha256"]:
            return True
        return entry.phase == "updating" and du.values.get("URL") != want["url"]

    async def _run_intent(self, du: Node, start: bool) -> None:
        eu_paths = du.values.get("ExecutionUnitList", ())
        for eu_path in eu_paths if isinstance(eu_paths, tuple) else ():  # a list parameter: a tuple
            eu = self.dm.find_node(str(eu_path) + ".")
            if eu is None:
                continue
            status = eu.values.get("Status")
            if start and status not in ("Active", "Starting"):
                await self._operate(eu.path + "SetRequestedState()", {"RequestedState": "Active"})
                self._asked.add(eu.path)
            elif not start and status in ("Active", "Starting"):
                await self._operate(eu.path + "SetRequestedState()", {"RequestedState": "Idle"})

    async def await_intents(self, answer: Mapping[str, Any]) -> list[dict[str, str]]:
        """Wait (up to ``start_timeout``) until no EU of a wanted app is still on its way, then
        report those not in their run intent (with the EU's fault)."""
        deadline = asyncio.get_running_loop().time() + self.settings.start_timeout
        while any(self._moving(eu) for _, eu, _ in self._intents(answer)):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.1)
        self._asked.clear()
        return self.intent_failures(answer)

    def _moving(self, eu: Node) -> bool:
        """On its way: starting or stopping, or asked to start and not yet acted on (still Idle
        with no fault: the LCM's start task has not run yet)."""
        status = eu.values.get("Status")
        if status in MOVING:
            return True
        return eu.path in self._asked and status == "Idle" and eu.values.get("ExecutionFaultCode") == "NoFault"

    def intent_failures(self, answer: Mapping[str, Any]) -> list[dict[str, str]]:
        failures = []
        for app, eu, start in self._intents(answer):
            status = eu.values.get("Status")
            if (status == "Active") != start:
                fault = f" ({eu.values.get('ExecutionFaultCode')!s}: {eu.values.get('ExecutionFaultMessage')!s})"
                failures.append({"app": app, "message": f"{app}: {eu.path.rstrip('.')} is {status!s}, "
                                 f"wanted {'Active' if start else 'Idle'}{fault if start else ''}"})  # fmt: skip
        return failures

    def _intents(self, answer: Mapping[str, Any]) -> list[tuple[str, Node, bool]]:
        """(app, EU row, whether it should run) for every EU of the wanted apps installed here."""
        out = []
        for want in answer.get("apps", []):
            entry = self.ownership.entries.get(want["name"])
            du = self._du(entry.uuid) if entry is not None and entry.phase == "installed" else None
            eu_paths = du.values.get("ExecutionUnitList", ()) if du is not None else ()
            for eu_path in eu_paths if isinstance(eu_paths, tuple) else ():
                if (eu := self.dm.find_node(str(eu_path) + ".")) is not None:
                    out.append((str(want["name"]), eu, bool(want.get("start", True))))
        return out

    async def _uninstall(self, entry: Owned) -> None:
        self.ownership.put(Owned(entry.app, entry.uuid, entry.package, entry.sha256, entry.url, "uninstalling"))
        du = self._du(entry.uuid)
        if du is not None:
            log.info("fleet: uninstalling %s", entry.app)
            await self._operate(du.path + "Uninstall()", {})
        self.ownership.drop(entry.app)

    async def _operate(self, command: str, args: Mapping[str, Any]) -> None:
        result = self.dm.operate_one(command, args, command_key="fleet")
        if result.request is not None:
            await asyncio.shield(result.request.future)

    # -- tree --------------------------------------------------------------------------------------------

    def _du(self, uuid: str) -> Node | None:
        for row in self.dm.table(DU_TABLE).rows.values():
            if row.values.get("UUID") == uuid:
                return row
        return None

    def _execenv(self) -> Node | None:
        rows = list(self.dm.table(EE_TABLE).rows.values())
        for row in rows:
            if self.settings.execenv and row.values.get("Name") == self.settings.execenv:
                return row
        return None if self.settings.execenv or not rows else rows[0]

    def _show(self, **values: Any) -> None:
        if self._tree:
            self.dm.update(FLEET, values)

    def _changed(self, node: Node, old: Any, new: Any) -> None:
        values = node.values
        self.enabled, self.url = bool(values["Enable"]), str(values["URL"])
        self.labels = labels_text(parse_labels(str(values["Labels"])))
        self.ownership.set_overrides({"Enable": self.enabled, "URL": self.url, "Labels": self.labels})
        self._etag, self._settled = "", False
        self._wake.set()

    # -- timing ------------------------------------------------------------------------------------------

    def _jittered(self, seconds: float) -> float:
        return seconds * (1 + random.uniform(-self.settings.jitter, self.settings.jitter))

    def _backoff(self, error: str) -> float:
        self._failures_in_row += 1
        log.warning("fleet: %s", error)
        self._show(Status="Error", LastError=error[:1024])
        delay = min(self.settings.retry_max, self.settings.retry_min * 2 ** (self._failures_in_row - 1))
        return self._jittered(delay)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def _check_url(node: Node, value: Any) -> None:
    if value:
        try:
            FleetClient(str(value), "")
        except ValueError as exc:
            raise Fault(FaultCode.INVALID_VALUE, str(exc)) from None


def _check_labels(node: Node, value: Any) -> None:
    try:
        parse_labels(str(value))
    except FleetError as exc:
        raise Fault(FaultCode.INVALID_VALUE, f"Labels: {exc}") from None


def _image_name(path: Path) -> str:
    """RDK's firmware image name (``imagename:`` in /version.txt), the compatibility key."""
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "imagename":
                return value.strip()
    except OSError:
        pass
    return ""
