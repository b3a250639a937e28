"""The D-Bus provider's fault -> error-name table and error texts."""

from __future__ import annotations

import pytest

from dsm_tr181.buses.dbus_errors import (
    ERROR_NAMES,
    ERROR_PREFIX,
    INTERNAL_ERROR,
    error_name,
    fault_text,
    internal_error_text,
)
from dsm_tr181.errors import Fault, FaultCode

pytestmark = pytest.mark.unit

Gio = pytest.importorskip("gi.repository.Gio", reason="PyGObject (gi) is not installed")


def test_every_fault_code_has_a_name() -> None:
    assert set(ERROR_NAMES) == set(FaultCode)


def test_names_are_distinct_camel_case_words() -> None:
    names = list(ERROR_NAMES.values())
    assert len(set(names)) == len(names)
    for name in names:
        assert name[0].isupper() and name.isalnum(), name


@pytest.mark.parametrize("code", list(FaultCode), ids=lambda code: code.name)
def test_error_names_are_valid_dbus_error_names(code: FaultCode) -> None:
    name = error_name(code)
    assert name.startswith(ERROR_PREFIX)
    assert Gio.dbus_is_interface_name(name)  # error names follow the interface-name rules
    assert len(name) <= 255


def test_fault_text_carries_code_path_and_reason() -> None:
    fault = Fault(FaultCode.INVALID_VALUE, "70000 is outside the range", "Device.X.Y")
    assert fault_text(fault) == "7012 Invalid value: Device.X.Y: 70000 is outside the range"
    assert fault_text(Fault(FaultCode.COMMAND_FAILURE, "failed")) == "7022 Command failure: failed"


def test_fault_text_lists_every_failed_parameter_once() -> None:
    first = Fault(FaultCode.NOT_WRITABLE, "the parameter is not writable", "Device.A")
    second = Fault(FaultCode.INVALID_TYPE, "'x' is not a boolean", "Device.B")
    combined = Fault(first.code, first.message, first.path)
    combined.details = [first, second]
    assert fault_text(combined) == (
        "7013 Attempt to update non-writeable parameter: Device.A: the parameter is not writable; "
        "7011 Invalid type: Device.B: 'x' is not a boolean"
    )


def test_internal_error_reveals_nothing_by_default() -> None:
    assert INTERNAL_ERROR == "com.rdkcentral.DSM.Error.InternalError"
    assert internal_error_text() == "7003 Internal error"
    assert internal_error_text("busy") == "7003 Internal error: busy"
