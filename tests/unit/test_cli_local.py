"""dsmcli without a daemon (--local: a fresh in-process data model) and its progress display."""

from __future__ import annotations

import io

import pytest

from dsm_tr181.cli import ProgressPrinter, main

pytestmark = pytest.mark.unit


def test_local_get_prints_the_fresh_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--local", "get", "Device.SoftwareModules."]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Device.SoftwareModules.ExecEnvClassNumberOfEntries = 0",
        "Device.SoftwareModules.ExecEnvNumberOfEntries = 0",
        "Device.SoftwareModules.DeploymentUnitNumberOfEntries = 0",
        "Device.SoftwareModules.ExecutionUnitNumberOfEntries = 0",
    ]


def test_local_malformed_path_is_a_7008_fault_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--local", "get", "Device..SoftwareModules."]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("dsmcli: error 7008 Invalid path syntax at Device..SoftwareModules.: ")
    assert "Traceback" not in captured.err


def test_local_json_instances_and_supported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--local", "--json", "get", "Device.SoftwareModules.ExecEnvNumberOfEntries"]) == 0
    assert capsys.readouterr().out == '{\n  "Device.SoftwareModules.ExecEnvNumberOfEntries": "0"\n}\n'
    assert main(["--local", "instances", "Device.SoftwareModules.ExecEnv."]) == 0
    assert capsys.readouterr().out == ""
    assert main(["--local", "instances", "Device.SoftwareModules."]) == 1  # TR-369: GetInstances of a non-table
    assert "error 7018 Object is not a table" in capsys.readouterr().err
    assert main(["--local", "supported", "Device.SoftwareModules.", "--first-level-only"]) == 0
    out = capsys.readouterr().out
    assert "Device.SoftwareModules.  object, read-only" in out and "  InstallDU()  async  in: URL," in out


def test_local_refuses_verbs_that_need_the_daemon() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--local", "du.list"])
    assert info.value.code == 2


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_one_live_line() -> None:
    out = Terminal()
    with ProgressPrinter(out) as progress:
        progress({"kind": "stage", "stage": "download", "done": 512 * 1024, "total": 2 << 20})
        progress({"kind": "stage", "stage": "download", "done": 2 << 20, "total": 2 << 20})
        progress({"kind": "status", "path": "Device.SoftwareModules.DeploymentUnit.1.", "status": "Installed"})
    assert out.getvalue() == (
        "\rdownload: 512.0 KiB of 2.0 MiB (25%)\033[K"
        "\rdownload: 2.0 MiB of 2.0 MiB (100%)\033[K\n"
        "Device.SoftwareModules.DeploymentUnit.1: Installed\n"
    )


def test_progress_elsewhere_is_one_line_per_stage() -> None:
    out = io.StringIO()
    with ProgressPrinter(out) as progress:
        progress({"kind": "accepted", "request_id": "4", "command": "Device.SoftwareModules.InstallDU()"})
        for done in (0, 100, 200):
            progress({"kind": "stage", "stage": "download", "done": done, "total": -1})
        progress({"kind": "stage", "stage": "unpack", "done": 0, "total": -1})
    assert out.getvalue().splitlines() == [
        "request 4 accepted: Device.SoftwareModules.InstallDU()",
        "download...",
        "unpack...",
    ]


def test_a_known_verb_gets_its_parser_alone_and_the_same_answer(capsys: pytest.CaptureFixture[str]) -> None:
    from dsm_tr181.cli import build_parser, verb_of

    assert verb_of(["--socket", "get", "--json", "get", "x"]) == "get"  # --socket's value is no verb
    assert verb_of(["--json"]) is None
    argv = ["--json", "get", "--max-depth", "2", "Device.X."]
    alone, full = build_parser("get").parse_args(argv), build_parser().parse_args(argv)
    assert vars(alone) == vars(full)
    with pytest.raises(SystemExit):
        build_parser("nonsense").parse_args(["nonsense"])
    assert "ee.list" in capsys.readouterr().err  # the full parser lists the verbs there are


def layer_step(number: str, layer_done: int, layer_total: int, stored: bool = False) -> dict[str, object]:
    """A download step of an image whose second layer (2 MiB) is the only one to fetch."""
    digest = "sha256:" + number[0] * 64
    done = 0 if number == "1/2" else layer_done
    return {"kind": "stage", "stage": "download", "done": done, "total": 2 << 20, "layer": f"{number} {digest}",
            "layer_done": layer_done, "layer_total": layer_total, "layer_stored": stored}  # fmt: skip


def test_image_progress_shows_each_layer_bytes_of_bytes_live_and_once_it_is_in() -> None:
    out = Terminal()
    with ProgressPrinter(out) as progress:
        progress(layer_step("1/2", 1 << 20, 1 << 20, stored=True))
        progress(layer_step("2/2", 1 << 19, 2 << 20))
        progress(layer_step("2/2", 2 << 20, 2 << 20))
    assert out.getvalue() == (
        "layer 1/2 sha256:111111111111: already stored (1.0 MiB)\n"
        "\rdownload: 0 B of 2.0 MiB (0%)\033[K"
        "\rdownload: 512.0 KiB of 2.0 MiB (25%), layer 2/2 sha256:222222222222: 512.0 KiB of 2.0 MiB\033[K"
        "\rlayer 2/2 sha256:222222222222: 2.0 MiB of 2.0 MiB\033[K\n"
        "\rdownload: 2.0 MiB of 2.0 MiB (100%)\033[K\n"
    )
    elsewhere = io.StringIO()
    with ProgressPrinter(elsewhere) as progress:
        progress(layer_step("2/2", 1 << 19, 2 << 20))
        progress(layer_step("2/2", 2 << 20, 2 << 20))
        progress(layer_step("2/2", 2 << 20, 2 << 20))  # shown once
    assert elsewhere.getvalue().splitlines() == [
        "download... (2.0 MiB)",
        "layer 2/2 sha256:222222222222: 2.0 MiB of 2.0 MiB",
    ]
