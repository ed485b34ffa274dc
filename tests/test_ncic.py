"""`alprd hotlist pack --columns ncic` (issue 21, item 6): NCIC field codes mapped, other columns ignored
and said once, entries already expired said and left out; real CLI, keys and bundles."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alprd.cli import main
from alprd.privacy.hotlist import load_bundle
from alprd.privacy.keys import load_list_key, load_signing_pub

NEXT_YEAR = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y%m%d")
NCIC = f"""\
LIC,LIS,LIT,VIN,NIC,OCA,ORI,MKE,EXP,VMA
7ABC123,CA,PC,1HGCM82633A004352,V123456789,24-00123,CA0194200,EV,{NEXT_YEAR},HOND
8XYZ999,NV,PC,,V987654321,,NV0020000,EV,20200131,
4TRK200,,,,,,,EFL,,
"""


@pytest.fixture
def hq(tmp_path: Path) -> Path:
    assert main(["keys", "agency", "--out", str(tmp_path / "hq")]) == 0
    return tmp_path / "hq"


def pack(tmp_path: Path, hq: Path, text: str, *extra: str) -> int:
    src = tmp_path / "ncic.csv"
    src.write_text(text)
    return main(["hotlist", "pack", str(src), "--keys", str(hq), "--version", "3", "--out",
                 str(tmp_path / "list.bundle"), *extra])


def test_ncic_columns_are_mapped_extra_ones_ignored_once_and_expired_entries_left_out(
    tmp_path: Path, hq: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pack(tmp_path, hq, NCIC, "--columns", "ncic") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["entries"] == 2
    ignored = [line for line in err.splitlines() if "ignored columns" in line]
    assert len(ignored) == 1 and ignored[0].endswith(": VIN, VMA")
    assert "1 entry already expired, left out (NIC V987654321)" in err
    assert "8XYZ999" not in out + err and "7ABC123" not in out + err  # plates are never printed
    hot = load_bundle((tmp_path / "list.bundle").read_bytes(), load_signing_pub(hq / "signing.pub"),
                      load_list_key(hq / "list.key"), datetime.now(UTC))
    m = hot.match("7ABC123", (0.95,) * 7)
    assert m is not None
    assert (m.reason, m.state, m.plate_type, m.case_number, m.note, m.source) == (
        "EV", "CA", "PC", "V123456789", "24-00123", "CA0194200")
    # EXP is a date: the entry holds until that day's end (UTC), as the CSV's `expires` dates do
    assert m.expires == datetime.strptime(NEXT_YEAR, "%Y%m%d").replace(tzinfo=UTC) + timedelta(days=1)
    assert hot.match("8XYZ999", (0.95,) * 7) is None  # left out at pack time
    plain = hot.match("4TRK200", (0.95,) * 7)
    assert plain is not None and (plain.state, plain.case_number, plain.expires) == ("", "", None)


def test_without_columns_ncic_the_same_file_is_refused_as_before(
    tmp_path: Path, hq: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pack(tmp_path, hq, NCIC) == 2
    err = capsys.readouterr().err
    assert "unknown column 'lic'" in err and not (tmp_path / "list.bundle").exists()


@pytest.mark.parametrize(("text", "problem"), [
    ("LIC,LIS,NIC\n7ABC123,CA,V1\n", "header has no 'MKE' (reason) column"),
    ("LIC,MKE,LIC\n7ABC123,EV,7ABC124\n", "column 'LIC' appears twice"),
    ("LIC,MKE,EXP\n7ABC123,EV,20261341\n", "ncic.csv:2: expires '20261341' is not an ISO date"),
    ("LIC,MKE,LIS\n7ÄBC123,EV,CA\n", "ncic.csv:2: plate '7ÄBC123' has characters other than"),
    ("", "empty file; the first line must be a header with LIC,MKE"),
])
def test_a_bad_ncic_file_is_refused_naming_the_line_and_the_field_code(
    tmp_path: Path, hq: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    assert pack(tmp_path, hq, text, "--columns", "ncic") == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "list.bundle").exists()
