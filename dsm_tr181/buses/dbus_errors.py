"""The D-Bus provider's one translation table: FaultCode -> D-Bus error name.

A :class:`~dsm_tr181.errors.Fault` reaches a D-Bus client as the error
``com.rdkcentral.DSM.Error.<Name>`` with the message ``"<USP code> <title>: <path>: <reason>"``
(for example ``"7013 Attempt to update non-writeable parameter: Device.X.Y: the parameter
is not writable"``). Anything else is logged by the provider and sent as InternalError
with no details.
"""

from __future__ import annotations

from dsm_tr181.errors import Fault, FaultCode

ERROR_PREFIX = "com.rdkcentral.DSM.Error."

ERROR_NAMES: dict[FaultCode, str] = {
    FaultCode.MESSAGE_FAILED: "MessageFailed",
    FaultCode.MESSAGE_NOT_SUPPORTED: "MessageNotSupported",
    FaultCode.REQUEST_DENIED: "RequestDenied",
    FaultCode.INTERNAL_ERROR: "InternalError",
    FaultCode.INVALID_ARGUMENTS: "InvalidArguments",
    FaultCode.RESOURCES_EXCEEDED: "ResourcesExceeded",
    FaultCode.PERMISSION_DENIED: "PermissionDenied",
    FaultCode.INVALID_CONFIGURATION: "InvalidConfiguration",
    FaultCode.INVALID_PATH_SYNTAX: "InvalidPathSyntax",
    FaultCode.PARAMETER_ACTION_FAILED: "ParameterActionFailed",
    FaultCode.UNSUPPORTED_PARAMETER: "UnsupportedParameter",
    FaultCode.INVALID_TYPE: "InvalidType",
    FaultCode.INVALID_VALUE: "InvalidValue",
    FaultCode.NOT_WRITABLE: "NotWritable",
    FaultCode.VALUE_CONFLICT: "ValueConflict",
    FaultCode.OPERATION_ERROR: "OperationError",
    FaultCode.OBJECT_NOT_FOUND: "ObjectNotFound",
    FaultCode.OBJECT_NOT_CREATED: "ObjectNotCreated",
    FaultCode.NOT_A_TABLE: "NotATable",
    FaultCode.NOT_CREATABLE: "NotCreatable",
    FaultCode.OBJECT_NOT_UPDATED: "ObjectNotUpdated",
    FaultCode.REQUIRED_PARAMETER_FAILED: "RequiredParameterFailed",
    FaultCode.COMMAND_FAILURE: "CommandFailure",
    FaultCode.COMMAND_CANCELED: "CommandCanceled",
    FaultCode.DELETE_FAILURE: "DeleteFailure",
    FaultCode.DUPLICATE_KEY: "DuplicateKey",
    FaultCode.INVALID_PATH: "InvalidPath",
    FaultCode.INVALID_COMMAND_ARGUMENTS: "InvalidCommandArguments",
    FaultCode.UNAVAILABLE_ROLE: "UnavailableRole",
    FaultCode.SERVER_UNREACHABLE: "ServerUnreachable",
    FaultCode.SERVER_INSECURE: "ServerInsecure",
    FaultCode.CORRUPT_DATA: "CorruptData",
    FaultCode.BAD_SIGNATURE: "BadSignature",
    FaultCode.UNAVAILABLE_USER_ROLE: "UnavailableUserRole",
    FaultCode.UNKNOWN_EE: "UnknownExecEnv",
    FaultCode.DU_EE_MISMATCH: "DeploymentUnitExecEnvMismatch",
    FaultCode.DUPLICATE_DU: "DuplicateDeploymentUnit",
    FaultCode.SYSTEM_RESOURCES_EXCEEDED: "SystemResourcesExceeded",
    FaultCode.INVALID_DU_STATE: "InvalidDeploymentUnitState",
    FaultCode.INVALID_EE_STATE: "InvalidExecEnvState",
    FaultCode.INVALID_UUID: "InvalidUUIDFormat",
    FaultCode.DISABLED_EE: "DisabledExecEnv",
    FaultCode.UNKNOWN_DU: "UnknownDeploymentUnit",
    FaultCode.DOWNGRADE_NOT_PERMITTED: "DowngradeNotPermitted",
    FaultCode.FILE_TRANSFER_FAILURE: "FileTransferFailure",
    FaultCode.TRANSFER_AUTH_FAILURE: "FileTransferAuthenticationFailure",
    FaultCode.UNSUPPORTED_PROTOCOL: "UnsupportedTransferProtocol",
    FaultCode.FILE_ACCESS_FAILURE: "FileAccessFailure",
    FaultCode.DOWNLOAD_INCOMPLETE: "DownloadIncomplete",
}

INTERNAL_ERROR = ERROR_PREFIX + ERROR_NAMES[FaultCode.INTERNAL_ERROR]


def error_name(code: FaultCode) -> str:
    return ERROR_PREFIX + ERROR_NAMES[code]


def fault_text(fault: Fault) -> str:
    """``"7012 Invalid value: Device.X.Y: reason"``; the other failed parameters of a
    Set (``fault.details``) follow, separated by "; "."""
    texts = [_one(fault)]
    texts += [text for text in map(_one, fault.details) if text not in texts]
    return "; ".join(texts)


def internal_error_text(reason: str = "") -> str:
    """The InternalError message: a reason that reveals nothing of the daemon's code."""
    code = FaultCode.INTERNAL_ERROR
    return f"{code.usp} {code.title}: {reason}" if reason else f"{code.usp} {code.title}"


def _one(fault: Fault) -> str:
    where = f"{fault.path}: " if fault.path else ""
    return f"{fault.code.usp} {fault.code.title}: {where}{fault.message}"
