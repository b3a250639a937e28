"""integration/usp-pa/*.conf are what regenerate.py makes from the served model, and list
nothing RDK's USP agent (LCM build) registers itself (a path twice aborts the agent)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

DIRECTORY = Path(__file__).resolve().parents[2] / "integration" / "usp-pa"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("usp_pa_regenerate", DIRECTORY / "regenerate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.unit
def test_conf_files_are_up_to_date_and_leave_the_lcm_paths_to_the_agent() -> None:
    regenerate = generator()
    expected = regenerate.conf_files()
    for name, text in expected.items():
        assert (DIRECTORY / name).read_text() == text, f"{name} is stale: run python integration/usp-pa/regenerate.py"
    paths = [line.split()[0] for text in expected.values() for line in text.splitlines() if not line.startswith("#")]
    assert len(paths) == len(set(paths))
    assert not set(paths) & regenerate.LCM_OWNED
    assert "Device.SoftwareModules.ExecutionUnit.{i}.Vendor" in paths
    assert "Device.SoftwareModules.DeploymentUnit.{i}.UUID" in paths
