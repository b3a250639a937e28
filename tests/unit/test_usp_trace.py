"""Reading Notify messages from obuspa's protocol trace (tests/support/usp_stack.py).

The excerpts are what obuspa v10.0.11 prints with ``-p`` (protobuf text of each USP Record
and Message it sends): the -m usp_agent tests read the real trace; these cases pin the
forms they rarely meet — an empty string (no ``value`` line), a command failure, an escaped
quote — and messages that are not Notify.
"""

from __future__ import annotations

import pytest

from tests.support.usp_stack import Notify, parse_notifications

pytestmark = pytest.mark.unit


def _message(msg_type: str, body: str) -> str:
    return f'header {{\n  msg_id: "m-1"\n  msg_type: {msg_type}\n}}\nbody {{\n{body}}}\n'


EVENT = _message(
    "NOTIFY",
    """  request {
    notify {
      subscription_id: "dsm-1"
      send_resp: false
      event {
        obj_path: "Device.SoftwareModules."
        event_name: "DUStateChange!"
        params {
          key: "Fault.FaultString"
          value: "no \\"web\\" here"
        }
        params {
          key: "Fault.FaultCode"
          value: "7226"
        }
        params {
          key: "Version"
        }
      }
    }
  }
""",
)
FAILURE = _message(
    "NOTIFY",
    """  request {
    notify {
      subscription_id: "dsm-2"
      send_resp: false
      oper_complete {
        obj_path: "Device.SoftwareModules.DeploymentUnit.1."
        command_name: "Update()"
        command_key: "k"
        cmd_failure {
          err_code: 7022
          err_msg: "refused"
        }
      }
    }
  }
""",
)
ROW = _message(
    "NOTIFY",
    """  request {
    notify {
      subscription_id: "dsm-3"
      send_resp: false
      obj_creation {
        obj_path: "Device.SoftwareModules.ExecutionUnit.1."
      }
    }
  }
""",
)
NOT_NOTIFY = _message(
    "GET_RESP",
    """  response {
    get_resp {
      req_path_results {
        requested_path: "Device.SoftwareModules."
      }
    }
  }
""",
)


def test_every_notify_in_order_with_its_arguments_and_nothing_else() -> None:
    trace = "\n".join(["NOTIFY sending at time …", EVENT, NOT_NOTIFY, FAILURE, "PUBLISH\ntopic: /usp/controller", ROW])
    assert parse_notifications(trace) == [
        Notify("event", "dsm-1", "Device.SoftwareModules.", "DUStateChange!",
               {"Fault.FaultString": 'no "web" here', "Fault.FaultCode": "7226", "Version": ""}),
        Notify("oper_complete", "dsm-2", "Device.SoftwareModules.DeploymentUnit.1.", "Update()", {}, (7022, "refused")),
        Notify("obj_creation", "dsm-3", "Device.SoftwareModules.ExecutionUnit.1.", "", {}),
    ]  # fmt: skip
