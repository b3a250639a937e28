"""Effective container specs for runtime tests: what the LCM would hand a runtime for a bundle."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from dsm_tr181.containerspec import ConfinementPolicy, EuInputs, SpecContext, effective_spec


def spec_of(
    bundle: Path,
    container_id: str,
    *,
    policy: ConfinementPolicy | None = None,
    privileged: bool = False,
    instance: str = "dsm-test",
) -> dict[str, Any]:
    config = json.loads((bundle / "config.json").read_text())
    context = SpecContext("default", container_id, f"/{instance}/default/{container_id}", platform.machine())
    return effective_spec(config, str(bundle), EuInputs(privileged), policy or ConfinementPolicy(), context)
