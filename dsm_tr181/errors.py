"""One fault vocabulary for the whole product.

Every error a controller can see is a :class:`Fault` carrying a :class:`FaultCode`.
A code knows its TR-369 (USP, 7000-series) number and the matching TR-069
(CWMP, 9000-series) number, so each front end translates with one table.

USP numbers come from TR-369 §7.8 (7000-7031) and from the TR-181 2.19.1
``DUStateChange!.Fault.FaultCode`` description (7032-7037, 72xx). CWMP numbers
come from TR-069 Amendment 6 Table A.5 (``shared/bbf/softwaremodules.json``).
Where TR-369 defines no USP number for a CWMP software-module fault
(Unknown DU, Disabled EE, Downgrade not permitted, ...) the USP number is the
one TR-369 prescribes for that situation, see the comments below.
"""

from __future__ import annotations

from enum import Enum


class FaultCode(Enum):
    """(USP code, CWMP code, name as the standard spells it)."""

    MESSAGE_FAILED = (7000, 9002, "Message failed")
    MESSAGE_NOT_SUPPORTED = (7001, 9000, "Message not supported")
    REQUEST_DENIED = (7002, 9001, "Request denied")
    INTERNAL_ERROR = (7003, 9002, "Internal error")
    INVALID_ARGUMENTS = (7004, 9003, "Invalid arguments")
    RESOURCES_EXCEEDED = (7005, 9004, "Resources exceeded")
    PERMISSION_DENIED = (7006, 9001, "Permission denied")
    INVALID_CONFIGURATION = (7007, 9002, "Invalid configuration")
    INVALID_PATH_SYNTAX = (7008, 9005, "Invalid path syntax")
    PARAMETER_ACTION_FAILED = (7009, 9002, "Parameter action failed")
    UNSUPPORTED_PARAMETER = (7010, 9005, "Unsupported parameter")
    INVALID_TYPE = (7011, 9006, "Invalid type")
    INVALID_VALUE = (7012, 9007, "Invalid value")
    NOT_WRITABLE = (7013, 9008, "Attempt to update non-writeable parameter")
    VALUE_CONFLICT = (7014, 9007, "Value conflict")
    OPERATION_ERROR = (7015, 9002, "Operation error")
    OBJECT_NOT_FOUND = (7016, 9005, "Object does not exist")
    OBJECT_NOT_CREATED = (7017, 9002, "Object could not be created")
    NOT_A_TABLE = (7018, 9005, "Object is not a table")
    NOT_CREATABLE = (7019, 9005, "Attempt to create non-creatable object")
    OBJECT_NOT_UPDATED = (7020, 9002, "Object could not be updated")
    REQUIRED_PARAMETER_FAILED = (7021, 9003, "Required parameter failed")
    COMMAND_FAILURE = (7022, 9002, "Command failure")
    COMMAND_CANCELED = (7023, 9002, "Command canceled")
    DELETE_FAILURE = (7024, 9002, "Delete failure")
    DUPLICATE_KEY = (7025, 9007, "Object exists with duplicate key")
    INVALID_PATH = (7026, 9005, "Invalid path")
    INVALID_COMMAND_ARGUMENTS = (7027, 9003, "Invalid command arguments")

    # TR-181 DUStateChange!.Fault.FaultCode values outside 72xx.
    UNAVAILABLE_ROLE = (7032, 9001, "Unavailable Role")
    SERVER_UNREACHABLE = (7033, 9015, "Server Unreachable")
    SERVER_INSECURE = (7034, 9012, "Server Insecure")
    CORRUPT_DATA = (7035, 9018, "Corrupt Data")
    BAD_SIGNATURE = (7036, 9019, "Bad Signature")
    UNAVAILABLE_USER_ROLE = (7037, 9001, "Unavailable User Role")

    # Software-module faults (TR-181 / TR-369 Appendix I), CWMP = USP - 200.
    UNKNOWN_EE = (7223, 9023, "Unknown Execution Environment")
    DU_EE_MISMATCH = (7225, 9025, "Deployment Unit to Execution Environment Mismatch")
    DUPLICATE_DU = (7226, 9026, "Duplicate Deployment Unit")
    SYSTEM_RESOURCES_EXCEEDED = (7227, 9027, "System Resources Exceeded")
    INVALID_DU_STATE = (7229, 9029, "Invalid Deployment Unit State")
    # TR-369 I.2.2: Restart() of an EU that is Stopping. CWMP has no counterpart.
    INVALID_EE_STATE = (7230, 9002, "Invalid Execution Environment State")

    # CWMP faults TR-369 gives no USP number of their own. The USP number is
    # what TR-369 Appendix I prescribes for the situation:
    # - a malformed UUID is an invalid command argument (R-OPR.5 family);
    INVALID_UUID = (7027, 9022, "Invalid UUID Format")
    # - a DU state change on a disabled EE reports "Invalid value" (I.3);
    DISABLED_EE = (7012, 9024, "Disabled Execution Environment")
    # - USP addresses DUs by path, so an unknown DU is an object that does not exist;
    UNKNOWN_DU = (7016, 9028, "Unknown Deployment Unit")
    # - a downgrade refused by device policy is a request denied for a reason
    #   the message states (7002); same-version updates are DUPLICATE_DU (7226).
    DOWNGRADE_NOT_PERMITTED = (7002, 9030, "Invalid Deployment Unit Update - Downgrade not permitted")
    # - file transfer failures without a more specific USP code.
    FILE_TRANSFER_FAILURE = (7002, 9010, "File transfer failure")
    TRANSFER_AUTH_FAILURE = (7002, 9012, "File transfer server authentication failure")
    UNSUPPORTED_PROTOCOL = (7004, 9013, "Unsupported protocol for file transfer")
    FILE_ACCESS_FAILURE = (7002, 9016, "File transfer failure: unable to access file")
    DOWNLOAD_INCOMPLETE = (7033, 9017, "File transfer failure: unable to complete download")

    @property
    def usp(self) -> int:
        return self.value[0]

    @property
    def cwmp(self) -> int:
        return self.value[1]

    @property
    def title(self) -> str:
        return self.value[2]


class Fault(Exception):
    """A failure a controller is told about: a code, a path and the reason."""

    def __init__(self, code: FaultCode, message: str, path: str = "") -> None:
        self.code = code
        self.message = message
        self.path = path
        # Per-parameter faults of a request that failed as a whole (USP param_errs).
        self.details: list[Fault] = []
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.message} ({self.code.usp} {self.code.title})"

    def at(self, path: str) -> Fault:
        """The same fault, naming ``path`` if it named no path yet."""
        if not self.path:
            self.path = path
            self.args = (self.describe(),)
        return self

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code.usp,
            "cwmp_code": self.code.cwmp,
            "name": self.code.title,
            "path": self.path,
            "message": self.message,
        }


class AdapterUnavailable(Exception):
    """A configured adapter cannot be loaded (a library or binary is missing)."""
