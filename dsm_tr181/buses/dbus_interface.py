"""The ``com.rdkcentral.DSM`` D-Bus interface: names and introspection data.

:data:`INTROSPECTION` is the one definition of the interface: the provider registers
it and ``integration/com.rdkcentral.DSM.xml`` is this text (``python -m
dsm_tr181.buses.dbus_interface > integration/com.rdkcentral.DSM.xml`` regenerates it; a
test checks they are equal). ``integration/dbus.md`` documents it.
"""

from __future__ import annotations

INTERFACE = "com.rdkcentral.DSM"

INTROSPECTION = """\
<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<!-- Generated from dsm_tr181/buses/dbus_interface.py; documented in dbus.md. -->
<node>
  <interface name="com.rdkcentral.DSM">
    <!-- Full parameter path -> typed value, for parameter, object and search paths. -->
    <method name="Get">
      <arg name="paths" type="as" direction="in"/>
      <arg name="values" type="a{sv}" direction="out"/>
    </method>
    <!-- The values of Get as one JSON document, {object path: {name: TR-106 text}}:
         the way to read large subtrees. max_depth 0: every level below each path. -->
    <method name="GetBulk">
      <arg name="paths" type="as" direction="in"/>
      <arg name="max_depth" type="u" direction="in"/>
      <arg name="values" type="s" direction="out"/>
    </method>
    <!-- Object (ending ".") and parameter names at or below path -> writable. -->
    <method name="GetNames">
      <arg name="path" type="s" direction="in"/>
      <arg name="next_level" type="b" direction="in"/>
      <arg name="names" type="a{sb}" direction="out"/>
    </method>
    <!-- (instance path, unique keys) of the table rows at and below each path. -->
    <method name="GetInstances">
      <arg name="paths" type="as" direction="in"/>
      <arg name="first_level_only" type="b" direction="in"/>
      <arg name="instances" type="a(sa{sv})" direction="out"/>
    </method>
    <!-- The USP GetSupportedDM answer as a JSON document. -->
    <method name="GetSupportedDM">
      <arg name="paths" type="as" direction="in"/>
      <arg name="first_level_only" type="b" direction="in"/>
      <arg name="supported" type="s" direction="out"/>
    </method>
    <!-- Values are TR-106 text or typed; answers the values as now stored. -->
    <method name="Set">
      <arg name="values" type="a{sv}" direction="in"/>
      <arg name="allow_partial" type="b" direction="in"/>
      <arg name="updated" type="a{sv}" direction="out"/>
    </method>
    <method name="Add">
      <arg name="object" type="s" direction="in"/>
      <arg name="params" type="a{sv}" direction="in"/>
      <arg name="path" type="s" direction="out"/>
      <arg name="unique_keys" type="a{sv}" direction="out"/>
    </method>
    <method name="Delete">
      <arg name="paths" type="as" direction="in"/>
      <arg name="deleted" type="as" direction="out"/>
    </method>
    <!-- Synchronous commands: request_id "" and the outputs. Asynchronous ones: the
         request id now, the outputs later in OperationComplete. -->
    <method name="Operate">
      <arg name="command" type="s" direction="in"/>
      <arg name="args" type="a{sv}" direction="in"/>
      <arg name="request_id" type="s" direction="out"/>
      <arg name="output" type="a{sv}" direction="out"/>
    </method>
    <!-- Operate on every object a search or wildcard path matches (TR-369 R-OPR.1, R-OPR.2):
         one result per object, in path order: (command executed, request id or "", output
         arguments, fault_code or 0, fault_string or ""). A failure is a result, not an error. -->
    <method name="OperateEach">
      <arg name="command" type="s" direction="in"/>
      <arg name="args" type="a{sv}" direction="in"/>
      <arg name="results" type="a(ssa{sv}is)" direction="out"/>
    </method>
    <signal name="ValueChange">
      <arg name="path" type="s"/>
      <arg name="value" type="v"/>
    </signal>
    <signal name="ObjectCreation">
      <arg name="path" type="s"/>
      <arg name="unique_keys" type="a{sv}"/>
    </signal>
    <signal name="ObjectDeletion">
      <arg name="path" type="s"/>
    </signal>
    <signal name="Event">
      <arg name="path" type="s"/>
      <arg name="args" type="a{sv}"/>
    </signal>
    <!-- fault_code 0 and fault_string "" when the command succeeded. -->
    <signal name="OperationComplete">
      <arg name="request_id" type="s"/>
      <arg name="command" type="s"/>
      <arg name="output" type="a{sv}"/>
      <arg name="fault_code" type="i"/>
      <arg name="fault_string" type="s"/>
    </signal>
  </interface>
</node>
"""

if __name__ == "__main__":
    print(INTROSPECTION, end="")
