"""The CRM snapshot: locating, landing and strict parsing (docs/contract.md section 2)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipeline import redaction
from pipeline.sources import crm_location, crm_snapshot

DAY = dt.date(2026, 11, 20)
HEADER = "company_id,company_name,country,industry_tag,last_contact_at\n"


def write(tmp_path: Path, body: str | bytes, name: str = "crm_2026-11-20.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(body if isinstance(body, bytes) else body.encode("utf-8"))
    return path


def parse_error(tmp_path: Path, body: str | bytes) -> crm_snapshot.CrmSnapshotError:
    path = write(tmp_path, body)
    with pytest.raises(crm_snapshot.CrmSnapshotError) as caught:
        crm_snapshot.parse_snapshot(path)
    return caught.value


def test_snapshot_location_fills_the_date_into_the_template() -> None:
    assert crm_location.snapshot_location("s3://b/crm/crm_{date}.csv", DAY) == "s3://b/crm/crm_2026-11-20.csv"
    with pytest.raises(ValueError, match="no \\{date\\} placeholder"):
        crm_location.snapshot_location("crm.csv", DAY)


def test_redact_location_drops_credentials_and_query_strings() -> None:
    assert (
        redaction.redact_location("https://user:pw@host:8443/crm/x.csv?sig=SECRET")
        == "https://host:8443/crm/x.csv"
    )
    assert redaction.redact_location("/var/crm/x.csv") == "/var/crm/x.csv"


def test_parse_reads_every_column_and_converts_timestamps_to_utc(tmp_path: Path) -> None:
    body = (
        HEADER + "C1,Acme,DE,saas,2026-11-19T10:00:00+02:00\n"
        'C2,"Quote, ""Inc""",US,retail,2026-11-19 08:30:00\n'
        "C3,,,,\n"
    )
    snapshot = crm_snapshot.parse_snapshot(write(tmp_path, body))

    assert [company.as_row() for company in snapshot.companies] == [
        ("C1", "Acme", "DE", "saas", dt.datetime(2026, 11, 19, 8, 0)),
        ("C2", 'Quote, "Inc"', "US", "retail", dt.datetime(2026, 11, 19, 8, 30)),
        ("C3", None, None, None, None),
    ]
    assert snapshot.warnings == []


def test_columns_in_any_order_with_a_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    body = (
        "\ufefflast_contact_at,industry_tag,company_id,country,company_name\r\n"
        "2026-11-01T00:00:00Z,saas,C9,FR,Zed\r\n"
    )
    snapshot = crm_snapshot.parse_snapshot(write(tmp_path, body))
    assert snapshot.companies[0].as_row() == ("C9", "Zed", "FR", "saas", dt.datetime(2026, 11, 1))


def test_extra_columns_are_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    body = "company_id,company_name,country,industry_tag,last_contact_at,owner\nC1,A,DE,saas,,Ann\n"
    snapshot = crm_snapshot.parse_snapshot(write(tmp_path, body))
    assert len(snapshot.companies) == 1
    assert snapshot.warnings and "extra columns ignored: owner" in snapshot.warnings[0]
    assert "extra columns ignored: owner" in caplog.text


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "the file is empty"),
        (HEADER, "the file has a header but no rows"),
        ("company_name,country,industry_tag,last_contact_at\nA,DE,x,\n", "column 'company_id': missing"),
        (
            "company_id;company_name;country;industry_tag;last_contact_at\nC1;A;DE;x;\n",
            "is the file comma-separated?",
        ),
        (
            HEADER + "C1,A,DE,x,\nC1,B,DE,x,\n",
            "row 2 (line 3), column 'company_id': duplicate company_id 'C1'",
        ),
        (HEADER + "C1,A,DE,x,\n ,B,DE,x,\n", "row 2 (line 3), column 'company_id': company_id is empty"),
        (
            HEADER + "C1,A,DE,x,yesterday\n",
            "row 1 (line 2), column 'last_contact_at': cannot parse 'yesterday'",
        ),
        (HEADER + "C1,A,DE,x\n", "row 1 (line 2): expected 5 fields like the header, found 4"),
        (HEADER + 'C1,"Acme,DE,x,\n', "malformed CSV"),
        (
            HEADER.encode() + "C1,Müller,DE,x,\n".encode("latin-1"),
            "row 1 (line 2), column 'company_name': not UTF-8",
        ),
        (
            HEADER.encode() + "C1,A,DE,x,\nÜ2,B,DE,x,\n".encode("latin-1"),
            "row 2 (line 3), column 'company_id': not UTF-8: byte 0xdc",
        ),
        (
            "company_id,company_näme,country,industry_tag,last_contact_at\nC1,A,DE,x,\n".encode("latin-1"),
            "crm_2026-11-20.csv, line 1: not UTF-8: byte 0xe4",
        ),
        (
            (HEADER + "C1,A,DE,x,\n").encode("utf-16"),
            "line 1: not UTF-8: byte 0xff at offset 0 cannot be decoded (it looks like UTF-16)",
        ),
        ("company_id,company_id,country,industry_tag,last_contact_at\n", "duplicate column names"),
    ],
    ids=[
        "empty",
        "header-only",
        "no-company-id-column",
        "semicolons",
        "duplicate-id",
        "blank-id",
        "bad-timestamp",
        "short-row",
        "broken-quote",
        "latin-1",
        "latin-1-at-the-start-of-a-row",
        "latin-1-in-the-header",
        "utf-16",
        "duplicate-header",
    ],
)
def test_bad_snapshots_fail_naming_the_file_row_and_column(tmp_path: Path, body, expected: str) -> None:
    error = parse_error(tmp_path, body)
    message = str(error)
    assert message.startswith(str(tmp_path / "crm_2026-11-20.csv"))
    assert expected in message


def test_land_snapshot_copies_bytes_and_writes_the_manifest_last(tmp_path: Path) -> None:
    source = write(tmp_path, HEADER + "C1,A,DE,x,\n")
    data_dir = tmp_path / "data"

    for template in (str(tmp_path / "crm_{date}.csv"), f"file://{tmp_path}/crm_{{date}}.csv"):
        manifest = crm_location.land_snapshot(template, data_dir, DAY)
        landed = data_dir / "raw/crm/date=2026-11-20"
        assert (landed / "crm_2026-11-20.csv").read_bytes() == source.read_bytes()
        assert json.loads((landed / "manifest.json").read_text()) == manifest
        assert manifest["bytes"] == source.stat().st_size
        assert {path.name for path in landed.iterdir()} == {"crm_2026-11-20.csv", "manifest.json"}


def test_a_missing_snapshot_names_the_day_and_location(tmp_path: Path) -> None:
    with pytest.raises(crm_snapshot.CrmSnapshotNotFound, match="CRM snapshot for 2026-11-20 not found at"):
        crm_location.land_snapshot(str(tmp_path / "crm_{date}.csv"), tmp_path / "data", DAY)
    assert not (tmp_path / "data/raw/crm/date=2026-11-20/manifest.json").exists()


def test_a_landed_file_changed_after_landing_is_refused(tmp_path: Path) -> None:
    write(tmp_path, HEADER + "C1,A,DE,x,\n")
    crm_location.land_snapshot(str(tmp_path / "crm_{date}.csv"), tmp_path / "data", DAY)
    (tmp_path / "data/raw/crm/date=2026-11-20/crm_2026-11-20.csv").write_text(HEADER + "C2,B,DE,x,\n")

    with pytest.raises(crm_snapshot.CrmSnapshotError, match="differs from its manifest checksum"):
        crm_snapshot.read_landed_snapshot(tmp_path / "data", DAY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-19T23:30:00-01:00", dt.datetime(2026, 11, 20, 0, 30)),
        ("2026-11-19T08:00:00Z", dt.datetime(2026, 11, 19, 8, 0)),
        ("2026-11-19", dt.datetime(2026, 11, 19)),
        ("", None),
    ],
)
def test_parse_timestamp_normalises_to_naive_utc(text: str, expected) -> None:
    assert crm_snapshot.parse_timestamp(text) == expected
