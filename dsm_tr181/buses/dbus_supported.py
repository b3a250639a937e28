"""The USP GetSupportedDM answer as the JSON document GetSupportedDM returns.

Field names and enumeration values are those of ``GetSupportedDMResp`` in TR-369's
usp-msg.proto (its JSON form with the proto field names)::

    {"req_obj_results": [{"req_obj_path": "Device.SoftwareModules.",
                          "data_model_inst_uri": "urn:...",
                          "supported_objs": [{"supported_obj_path": "...",
                                              "access": "OBJ_READ_ONLY",
                                              "is_multi_instance": true,
                                              "supported_params": [{"param_name", "access", "value_type",
                                                                    "value_change"}],
                                              "supported_commands": [{"command_name", "command_type",
                                                                      "input_arg_names", "output_arg_names"}],
                                              "supported_events": [{"event_name", "arg_names"}],
                                              "unique_key_sets": [{"key_names": [...]}]}]}]}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dsm_tr181.tree.supported import SupportedCommand, SupportedEvent, SupportedObject, SupportedParam


def supported_dm_json(answer: Mapping[str, list[SupportedObject]], data_model_uri: str) -> str:
    results = [
        {"req_obj_path": path, "data_model_inst_uri": data_model_uri, "supported_objs": [_object(o) for o in objs]}
        for path, objs in answer.items()
    ]
    return json.dumps({"req_obj_results": results})


def _object(obj: SupportedObject) -> dict[str, Any]:
    return {
        "supported_obj_path": obj.path,
        "access": obj.access,
        "is_multi_instance": obj.is_multi_instance,
        "supported_params": [_param(p) for p in obj.params],
        "supported_commands": [_command(c) for c in obj.commands],
        "supported_events": [_event(e) for e in obj.events],
        "unique_key_sets": [{"key_names": names} for names in obj.unique_key_sets],
    }


def _param(param: SupportedParam) -> dict[str, Any]:
    return {
        "param_name": param.name,
        "access": param.access,
        "value_type": param.value_type,
        "value_change": param.value_change,
    }


def _command(command: SupportedCommand) -> dict[str, Any]:
    return {
        "command_name": command.name,
        "command_type": command.command_type,
        "input_arg_names": [a.name for a in command.input_args],
        "output_arg_names": [a.name for a in command.output_args],
    }


def _event(event: SupportedEvent) -> dict[str, Any]:
    return {"event_name": event.name, "arg_names": [a.name for a in event.args]}
