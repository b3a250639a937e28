"""Trees for the tests of whole-tree reads: many DUs, one EU each, in one ExecEnv."""

from __future__ import annotations

import uuid

from dsm_tr181.schema import load_schema
from dsm_tr181.tree.datamodel import DataModel

SM = "Device.SoftwareModules."


def many_dus(count: int) -> DataModel:
    """ExecEnv 1 and ``count`` DUs, DU n+1 with EU n+1 (named ``app "n" ☃``: quotes and non-ASCII)."""
    dm = DataModel(load_schema())
    ee = dm.add_row(f"{SM}ExecEnv.", {"Name": "default", "Enable": True, "Status": "Up"})
    for n in range(count):
        eu = dm.add_row(f"{SM}ExecutionUnit.", {"EUID": f"eu{n}", "Name": f'app "{n}" ☃', "ExecutionEnvRef": ee.ref})
        du = {"UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, str(n))), "Name": f"app{n}", "ExecutionUnitList": (eu.ref,)}
        dm.add_row(f"{SM}DeploymentUnit.", du)
    return dm
