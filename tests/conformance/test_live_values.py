"""Live values: what the running daemon serves, with DUs installed and an EU running, is valid.

The real ``dsm`` (real runc containers, DU archives built here) is read through its control
socket — another process. Every value must parse and validate as its TR-106 type (ranges,
enumerations, sizes, patterns, list facets); every reference must name an existing object
of the table its pathRef allows (strong and weak alike: this product only references rows
it serves); every NumberOfEntries must equal its table's rows; Aliases must be unique per table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from dsm_tr181.errors import Fault
from dsm_tr181.schema import Schema, load_schema
from dsm_tr181.schema.types import split_list
from tests.integration.lcm_helpers import (
    DU,
    EE1,
    build_du,
    eu_of,
    install,
    needs_runc,
    operate,
    rows,
    wait_status,
)
from tests.support.daemon import DsmDaemon

pytestmark = [pytest.mark.conformance, needs_runc]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Every value of ``Device.`` with two DUs installed (one EU running, one idle)."""
    work = tmp_path_factory.mktemp("live")
    (work / "dsm").mkdir()
    dsm = DsmDaemon(work / "dsm", execenvs=[{"name": "default"}, {"name": "spare", "enable": False}])
    try:
        dsm.start()
        for name in ("alpha", "beta"):
            outcome = install(dsm, str(build_du(work, name)))
            assert outcome.ok, outcome
        running = eu_of(dsm, rows(dsm, DU)[0])
        assert operate(dsm, running + "SetRequestedState()", {"RequestedState": "Active"}).ok
        wait_status(dsm, running, "Active")
        assert operate(dsm, EE1 + ".SetRunLevel()", {"RequestedRunLevel": 2}).ok
        yield dsm.get("Device.")
    finally:
        dsm.cleanup()


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


def schema_path(path: str) -> str:
    return ".".join("{i}" if part.isdigit() else part for part in path.split("."))


def test_every_value_is_valid_for_its_type(served: dict[str, str], schema: Schema) -> None:
    assert len(served) > 150
    invalid = {}
    for path, text in served.items():
        generic = schema_path(path)
        obj, _, name = generic.rpartition(".")
        parameter = schema.objects[obj + "."].parameters[name]
        if parameter.command:  # TR-106 command parameter (RequestedState, Reset): reads the null value
            if text != parameter.type.format(parameter.type.default_value()):
                invalid[path] = f"{text!r}: a command parameter reads its null value"
            continue
        try:
            parameter.type.parse(text)
        except Fault as fault:
            invalid[path] = f"{text!r}: {fault.message}"
    assert invalid == {}


def test_every_reference_names_an_existing_object_it_may_name(served: dict[str, str], schema: Schema) -> None:
    objects = {path.rpartition(".")[0] + "." for path in served}
    broken = {}
    checked = 0
    for path, text in served.items():
        obj, _, name = schema_path(path).rpartition(".")
        ref = schema.objects[obj + "."].parameters[name].type.path_ref
        if ref is None or not text:
            continue
        for target in split_list(text):
            checked += 1
            allowed = not ref.target_parents or any(
                (schema_path(target) + ".").startswith(parent) for parent in ref.target_parents
            )
            if target + "." not in objects or not allowed:
                broken[path] = target
    assert broken == {}
    assert checked >= 8  # ExecutionEnvRef, ExecutionUnitList, VendorLogList, ActiveExecutionUnits, ...


def test_number_of_entries_match_the_rows_and_aliases_are_unique(served: dict[str, str], schema: Schema) -> None:
    checked = 0
    for table_path, table in schema.objects.items():
        if not table.multi_instance or not table.num_entries_parameter:
            continue
        parent_generic, _, name = table_path[: -len(".{i}.")].rpartition(".")
        counter_generic = f"{parent_generic}.{table.num_entries_parameter}"
        for counter_path in [p for p in served if schema_path(p) == counter_generic]:
            prefix = counter_path[: -len(table.num_entries_parameter)] + name + "."
            instances = {p[len(prefix) :].split(".")[0] for p in served if p.startswith(prefix)}
            assert int(served[counter_path]) == len(instances), (counter_path, sorted(instances))
            aliases = Counter(served[f"{prefix}{n}.Alias"] for n in instances if f"{prefix}{n}.Alias" in served)
            assert all(c == 1 for c in aliases.values()), (prefix, aliases)
            checked += 1
    assert checked >= 5


def test_the_live_rows_are_there(served: dict[str, str]) -> None:
    """The check saw what it should: two DUs, two EUs (one Active), two ExecEnvs."""
    sm = "Device.SoftwareModules."
    counts = {n: served[f"{sm}{n}NumberOfEntries"] for n in ("ExecEnv", "DeploymentUnit", "ExecutionUnit")}
    assert counts == {"ExecEnv": "2", "DeploymentUnit": "2", "ExecutionUnit": "2"}
    assert sorted(v for p, v in served.items() if p.startswith(sm + "ExecutionUnit.") and p.endswith(".Status")) == [
        "Active",
        "Idle",
    ]
    assert served[EE1 + ".CurrentRunLevel"] == "2"
