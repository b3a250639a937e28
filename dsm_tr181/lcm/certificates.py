"""Device.Security.Certificate.{i}.: the trust store, one row per trusted certificate.

The certificates come from the daemon (read from the trust directory, see
:mod:`dsm_tr181.signing.truststore`) as plain values; this core part only serves them,
keeps each one's instance number and Enable across restarts (so that the ExecEnvs'
``Signers`` references stay right), and hands the enabled ones an ExecEnv's ``Signers``
name to the packager as trust anchors. :meth:`Certificates.reload` takes the trust store
again at run time (the daemon does on SIGHUP): new certificates get rows, changed ones new
values, and the rows of removed ones go, with the ``Signers`` references to them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dsm_tr181.lcm.ports import TrustedCertificate
from dsm_tr181.lcm.records import CertificateRecord
from dsm_tr181.lcm.tables import CERT_TABLE
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.nodes import Node

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)

ROW = CERT_TABLE + "{i}."


class Certificates:
    def __init__(self, lcm: Lcm, certificates: Sequence[TrustedCertificate]) -> None:
        self.lcm = lcm
        self.certificates = {c.name: c for c in certificates}
        self.records: dict[str, CertificateRecord] = {}

    def restore(self, stored: list[CertificateRecord]) -> None:
        """One row per certificate of the store, with the instance number it had before."""
        known = {r.name: r for r in stored}
        table = self.lcm.dm.table(CERT_TABLE)
        for name, cert in self.certificates.items():
            record = known.pop(name, None) or CertificateRecord(name=name, instance=table.next_instance)
            self.records[name] = record
            self.lcm.dm.add_row(CERT_TABLE, {**cert.values, "Enable": record.enable}, number=record.instance)
        for gone in known.values():
            log.warning("trusted certificate %s is no longer in the trust store", gone.name)
        self.lcm.commit(put=list(self.records.values()), delete=list(known.values()))

    def reload(self, certificates: Sequence[TrustedCertificate]) -> None:
        """Serve ``certificates`` (the trust store read again) instead of the current ones."""
        fresh = {c.name: c for c in certificates}
        table = self.lcm.dm.table(CERT_TABLE)
        gone = [self.records.pop(name) for name in list(self.records) if name not in fresh]
        for record in gone:
            self.lcm.dm.delete_row(f"{CERT_TABLE}{record.instance}")
        added: list[CertificateRecord] = []
        for name, cert in fresh.items():
            known = self.records.get(name)
            if known is None:
                known = self.records[name] = CertificateRecord(name=name, instance=table.next_instance)
                self.lcm.dm.add_row(CERT_TABLE, {**cert.values, "Enable": True}, number=known.instance)
                added.append(known)
            elif cert.der != self.certificates[name].der:
                self.lcm.dm.update(f"{CERT_TABLE}{known.instance}", cert.values)
        self.certificates = fresh
        self.lcm.commit(put=added, delete=gone)
        log.info("trust store reloaded: %d certificates (%d new, %d removed)", len(fresh), len(added), len(gone))

    def install_hooks(self) -> None:
        self.lcm.dm.on_set(ROW + "Enable", apply=self._enable_changed)

    def _enable_changed(self, node: Node, old: Value, new: Value) -> None:
        for record in self.records.values():
            if record.instance == node.number:
                record.enable = bool(new)
                self.lcm.commit(put=[record])

    def refs(self, names: Sequence[str]) -> tuple[str, ...]:
        """The rows of the certificates named (configured Signers); unknown names are logged."""
        refs = []
        for name in names:
            if name in self.records:
                refs.append(f"{CERT_TABLE}{self.records[name].instance}")
            else:
                log.warning("signer %r is not in the trust store", name)
        return tuple(refs)

    def anchors(self, refs: Sequence[str]) -> tuple[bytes, ...]:
        """The DER of the enabled certificates among the rows ``refs`` (an ExecEnv's Signers)."""
        by_ref = {f"{CERT_TABLE}{r.instance}": (name, r) for name, r in self.records.items()}
        chosen = [by_ref[ref] for ref in refs if ref in by_ref]
        return tuple(self.certificates[name].der for name, record in chosen if record.enable)
