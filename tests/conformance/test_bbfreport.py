"""BBF's own report tool (bbfreport, PyPI) lints the DM and DT documents cleanly.

bbfreport is optional: not in the test extras, so CI skips these unless it is installed.
It runs offline here: the documents import nothing outside datamodel/.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conformance.conftest import DATAMODEL, PRODUCT_DM, PRODUCT_DT

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(importlib.util.find_spec("bbfreport") is None, reason="bbfreport is not installed"),
]
RESTATED = ("SoftwareModules", "VendorConfigFile", "VendorLogFile")
# A dangling pathRef target or {{object}} reference, e.g. "...AvailableUserRoles: non-existent
# targetParent Device.Users.Role." or "...: {{object}}: non-existent ###.Users.Role".
DANGLING = re.compile(r"WARNING:lint:\S+: (?:\{\{object\}\}: |path ref -> )?non-existent (?:targetParent )?(\S+)$")
# Lint findings in the DM document that regenerate.py causes (reported to its owner):
KNOWN_DM_FINDINGS = {
    # VendorConfigFile.{i}.'s descriptions cite the Restore() command the restatement drops
    "WARNING:lint:Device.DeviceInfo.VendorConfigFile.{i}.: {{command}}: non-existent Restore()",
    "WARNING:lint:Device.DeviceInfo.VendorConfigFile.{i}.Name: {{param}}: non-existent Restore().Input.TargetFileName",
    # bbfreport's dateTime description cites SOAP1.1, which the restated bibliography lacks
    "WARNING:lint:{dateTime}: {{bibref}}: non-existent SOAP1.1",
}


def _lint(document: Path, include: Path = DATAMODEL) -> tuple[int, list[str]]:
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from bbfreport.main import main; sys.exit(main())",
         "--nocurdir", "--include", str(include), "--loglevel", "warning", str(document)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return run.returncode, (run.stdout + run.stderr).splitlines()


def test_dm_document_lints_clean_but_for_references_outside_the_restated_model() -> None:
    code, lines = _lint(PRODUCT_DM)
    assert code == 0, lines
    dangling = [m for m in map(DANGLING.match, lines) if m]
    unexpected = [line for line in lines if not DANGLING.match(line) and line not in KNOWN_DM_FINDINGS]
    unexpected += [m.string for m in dangling if any(name in m.group(1) for name in RESTATED)]
    print(f"bbfreport {PRODUCT_DM.name}: {len(dangling)} references to objects it does not restate")
    assert dangling and not unexpected, "\n".join(unexpected)


def test_dt_document_lints_clean(tmp_path: Path) -> None:
    assert _lint(PRODUCT_DT) == (0, [])
    # and bbfreport does read the DT: a parameter the model lacks is an error
    broken = tmp_path / PRODUCT_DT.name
    broken.write_text(PRODUCT_DT.read_text().replace('<parameter ref="EUID"', '<parameter ref="NoSuchEUID"'))
    _code, lines = _lint(broken)
    assert any(line.startswith("ERROR:") and "NoSuchEUID" in line for line in lines), lines
