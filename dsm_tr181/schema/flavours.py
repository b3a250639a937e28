"""The USP and CWMP flavours of the supported data model, and the view of it each one serves.

TR-181 2.19.1 comes in two flavours (tr-181-2-19-1-usp-full.xml, -cwmp-full.xml) whose
``Device.SoftwareModules.`` parameters differ. The product's document holds the USP flavour
plus the four parameters only the CWMP flavour defines (datamodel/regenerate.py); a front
end serves the parameters of one flavour, or of both:

* ``usp`` — without the CWMP-only parameters (:data:`CWMP_ONLY`);
* ``cwmp`` — without the USP-only parameters (:data:`USP_ONLY`);
* ``both`` — every parameter.

Commands and events are served in every flavour: the CWMP flavour has none, but on RDK-B
the TR-069 agent carries out ChangeDUState with them (integration/usp-tr069.md).
tests/conformance/test_flavours.py checks both lists against the BBF documents.
"""

from __future__ import annotations

import enum
from dataclasses import replace

from dsm_tr181.schema.model import Object, Schema

_SM = "Device.SoftwareModules."
_EE = _SM + "ExecEnv.{i}."
_DU = _SM + "DeploymentUnit.{i}."
_EU = _SM + "ExecutionUnit.{i}."

# Schema paths of the parameters of the served objects that only the CWMP flavour defines.
CWMP_ONLY = frozenset(
    {_EE + "Reset", _EE + "RequestedRunLevel", _EU + "RequestedState", _EU + "SupportedDataModelList"}
)
# ... and those only the USP flavour defines.
USP_ONLY = frozenset(
    {
        _DU + "InternalController",
        _DU + "ModuleVersion",
        *(
            _EE + name
            for name in (
                "AvailableAccessInterfaces",
                "AvailableRoles",
                "AvailableUserRoles",
                "LastRestarted",
                "RestartCount",
                "RestartReason",
                "Signers",
            )
        ),
    }
)


class Flavour(enum.Enum):
    USP = "usp"
    CWMP = "cwmp"
    BOTH = "both"


def flavoured(schema: Schema, flavour: Flavour) -> Schema:
    """``schema`` with the parameters of ``flavour`` only: a Schema of copied objects (same
    paths; parameters, commands and events shared), or ``schema`` itself for BOTH."""
    if flavour is Flavour.BOTH:
        return schema
    lacking = lacking_parameters(flavour)
    copies: dict[str, Object] = {}
    for path, obj in schema.objects.items():
        copy = replace(obj, children={}, parent=None)
        copy.parameters = {n: p for n, p in obj.parameters.items() if path + n not in lacking}
        copies[path] = copy
    for obj in schema.objects.values():
        for name, child in obj.children.items():
            copies[child.path].parent = copies[obj.path]
            copies[obj.path].children[name] = copies[child.path]
    return replace(schema, objects=copies)


def lacking_parameters(flavour: Flavour) -> frozenset[str]:
    """Schema paths of the parameters ``flavour`` does not define."""
    return {Flavour.USP: CWMP_ONLY, Flavour.CWMP: USP_ONLY, Flavour.BOTH: frozenset[str]()}[flavour]
