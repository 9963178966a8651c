"""The columnar CRM reader means exactly what the precise parser means (docs/contract.md section 2).

The precise parser (Python's csv module, row by row) is the oracle: on every file, the columnar reader
either returns the same columns or raises the same error, naming the same row, line and column.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random

import pytest

from pipeline.sources import crm_columnar, crm_snapshot
from pipeline.sources.crm_snapshot import CrmSnapshotError

HEADER = "company_id,company_name,country,industry_tag,last_contact_at\r\n"
COLUMNS = ("company_id", "company_name", "country", "industry_tag", "last_contact_at")


def precise(data: bytes) -> object:
    """The precise parser's columns, or its error message."""
    try:
        snapshot = crm_snapshot.parse_snapshot_bytes(data, "crm.csv")
    except CrmSnapshotError as error:
        return str(error)
    return crm_columnar.table_of_companies(snapshot.companies).to_pylist()


def columnar(data: bytes) -> tuple[object, str | None]:
    """The columnar reader's columns (or error message), and which reader it used."""
    try:
        table = crm_columnar.parse_table(data, "crm.csv")
    except CrmSnapshotError as error:
        return str(error), None
    return table.table.to_pylist(), table.reader


def assert_same_meaning(data: bytes) -> str | None:
    result, reader = columnar(data)
    assert result == precise(data), data[:300]
    return reader


def rows_file(*lines: str, header: str = HEADER) -> bytes:
    return (header + "".join(line + "\r\n" for line in lines)).encode("utf-8")


@pytest.mark.parametrize(
    "lines",
    [
        ["C1,Acme,DE,saas,2026-11-19T10:00:00+02:00", 'C2,"Quote, ""Inc""",US,retail,2026-11-19 08:30:00'],
        ['"C1","Acme","DE","saas","2026-11-19T10:00:00Z"', '"C2","","","",""'],
        ["C1,,,,", "C2, Name with spaces ,  FR  , saas ,  2026-11-19  "],
        [
            "C1,Acme,DE,saas,2026-11-19",
            "C2,Beta,DE,saas,2026-11-19T10:00",
            "C3,G,DE,saas,2026-11-19T10:00:07.5",
        ],
        ["C1,Acme,DE,saas,2026-11-19T10:00:07.123456-01:30", "C2,B,DE,saas,2026-11-19 23:59:59+23:59"],
        ["C1,Acme,DE,saas,1970-01-01T00:30:00+01:00", "C2,B,DE,saas,1000-01-01 00:00:00"],
        ["C1,Ac\u00e9me \u2603,DE,saas,", "C2,\u65e5\u672c,JP,saas,"],
    ],
    ids=["quoted", "quote-all", "spaces", "iso-shapes", "offsets-fractions", "epoch-edges", "unicode"],
)
def test_common_files_are_read_on_the_columns_with_the_precise_meaning(lines: list[str]) -> None:
    assert assert_same_meaning(rows_file(*lines)) == "columnar"


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-19t10:00:00",  # lower-case separator: fromisoformat reads it, the fast shapes don't
        "2026-11-19T10",
        "20261119",
        "2026-11-19T10:00:00+0200",
        "2026-11-19T10:00:00+02",
        "2026-11-19T10:00:00.1234567",
        "0999-01-01",
        "2026-W47-4",
    ],
)
def test_rarer_iso_timestamps_are_parsed_by_the_precise_function_in_place(value: str) -> None:
    data = rows_file("C1,Acme,DE,saas,2026-11-19", f"C2,B,DE,saas,{value}")
    assert assert_same_meaning(data) == "columnar"


@pytest.mark.parametrize(
    "value",
    [
        "2026-02-30",
        "2026-11-19T24:00:00",
        "2026-11-19Z",
        "yesterday",
        "2026-11-19T10:00:00z",
        "9999-12-31T23:59:00-01:00",
    ],
)
def test_bad_timestamps_fail_with_the_precise_parsers_message(value: str) -> None:
    data = rows_file("C1,Acme,DE,saas,2026-11-19", f"C2,B,DE,saas,{value}")
    result, _ = columnar(data)
    assert isinstance(result, str) and "row 2 (line 3), column 'last_contact_at'" in result
    assert result == precise(data)


@pytest.mark.parametrize(
    "data",
    [
        rows_file('C1,"Acme"x,DE,saas,'),  # text after a closing quote: csv refuses, pyarrow would not
        rows_file('C1,"Acme,DE,saas,'),  # unterminated quote
        rows_file('C1,Ac"me,DE,saas,'),  # a quote inside a plain field: a literal for csv
        rows_file('C1,"Two\r\nlines",DE,saas,', "C2,B,DE,saas,"),  # a quoted line break
        rows_file("C1,A,DE,saas,", "", "   ", "C2,B,DE,saas,"),  # blank and whitespace-only lines
        rows_file("C1,A,DE,saas,", "C1 ,B,DE,saas,"),  # duplicate after trimming
        rows_file("C1,A,DE,saas,", " ,B,DE,saas,"),  # empty id
        rows_file("C1,A,DE,saas,", "C2,B,DE,saas"),  # a field missing
        rows_file("C1,A,DE,saas,,extra"),
        rows_file("C1,A,DE,saas,", header="company_id,company_name,country,industry_tag\r\n"),
        rows_file(
            "C1,A,DE,saas,,x", header="company_id,company_name,country,industry_tag,last_contact_at,notes\r\n"
        ),
        rows_file("C1,saas,A,DE,", header="company_id,industry_tag,company_name,country,last_contact_at\r\n"),
        rows_file(
            "C1,A,DE,saas,", header='"company_id",company_name,country,industry_tag,last_contact_at\r\n'
        ),
        rows_file(
            "C1,A,A,DE,saas,",
            header="company_id,company_name,company_name,country,industry_tag,last_contact_at\r\n",
        ),
        (HEADER + "C1,A,DE,saas,\rC2,B,DE,saas,\r").encode(),  # old Mac line ends
        (HEADER + "C1,A,DE,saas,\nC2,B,DE,saas,").encode(),  # LF, no final line end
        ("\ufeff" + HEADER + "C1,A,DE,saas,\n").encode(),  # byte order mark
        HEADER.encode() + b"C1,A\xff,DE,saas,\r\n",  # not UTF-8
        HEADER.encode() + b"C1,A\x00B,DE,saas,\r\n",  # NUL
        rows_file(f"C1,{'x' * 131_072},DE,saas,"),  # the csv module's field size limit
        rows_file("C1," + "\u00e9" * 131_072 + ",DE,saas,"),  # the limit counts characters...
        rows_file("C1," + "\u00e9" * 70_000 + ",DE,saas,"),  # ...not bytes: 140,000 bytes are under it
        rows_file(  # the limit applies to every field, an extra column's too
            "C1,A,DE,saas,," + "x" * 140_000,
            header="company_id,company_name,country,industry_tag,last_contact_at,notes\r\n",
        ),
        rows_file("C1,A,DE,saas,", header=HEADER.rstrip() + ",notes_" + "x" * 140_000 + "\r\n"),
        rows_file("C1,\u00a0Acme\u00a0,\u00a0DE\u3000,\x1csaas\x1f,"),  # Unicode whitespace
        HEADER.encode(),
        b"",
        b" \r\n",
    ],
)
def test_any_other_file_means_the_same_or_fails_the_same(data: bytes) -> None:
    assert_same_meaning(data)


ALPHABET = ["a", "Z", "0", " ", ",", '"', "\r", "\n", "\t", "\u00e9", "\u00a0", "\x1c", "-", ":", "T", "+"]
TIMESTAMPS = [
    "",
    "2026-11-19",
    "2026-11-19T10:00:00Z",
    "2026-11-19 10:00:00+02:00",
    "2026-11-19T10:00:00.5",
    "2026-11-19T10:00",
    " 2026-11-19 ",
    "2026-13-01",
    "2026-11-19T10:00:00+0200",
    "x",
]


def random_file(rng: random.Random) -> bytes:
    """A CSV file written by the csv module (some quoting style), then perhaps damaged byte by byte."""
    buffer = io.StringIO(newline="")
    quoting = rng.choice([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])
    writer = csv.writer(buffer, quoting=quoting, lineterminator=rng.choice(["\r\n", "\n"]))
    writer.writerow(COLUMNS)
    for index in range(rng.randint(1, 12)):
        plain = rng.random() < 0.8
        text = "".join(rng.choice(ALPHABET[:4] if plain else ALPHABET) for _ in range(rng.randint(0, 6)))
        company_id = rng.choice([f"C{index}"] * 30 + [f" C{index} "] * 5 + [f"C{rng.randint(0, 3)}", text])
        timestamp = rng.choice(TIMESTAMPS[:7] * 20 + TIMESTAMPS)
        writer.writerow([company_id, text, rng.choice(["DE", " FR", ""]), "saas", timestamp])
    data = bytearray(buffer.getvalue().encode("utf-8"))
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        position = rng.randrange(len(data))
        if rng.random() < 0.5:
            data[position:position] = rng.choice([b'"', b",", b"\n", b"\r", b" "])
        else:
            del data[position]
    return bytes(data)


def test_random_and_damaged_files_mean_the_same_to_both_readers() -> None:
    rng = random.Random(20261129)
    readers = [assert_same_meaning(random_file(rng)) for _ in range(600)]
    # Both paths were exercised: the fuzzing would prove nothing if every file fell back.
    assert readers.count("columnar") > 100
    assert readers.count("precise") + readers.count(None) > 100


def test_a_million_row_shaped_file_stays_on_the_columns() -> None:
    lines = [
        f'C{index:07d},"Company {index}, ""Holding"" & Co",DE,saas,2026-11-{1 + index % 28:02d}T08:00+02:00'
        if index % 50 == 0
        else f"C{index:07d},Company {index},US,retail,2026-11-{1 + index % 28:02d} 08:30:00"
        for index in range(20_000)
    ]
    data = rows_file(*lines)
    table = crm_columnar.parse_table(data, "crm.csv")
    assert table.reader == "columnar"
    assert table.table.to_pylist() == precise(data)
    assert table.table.column("last_contact_at")[0].as_py() == dt.datetime(2026, 11, 1, 6, 0)


def test_files_read_in_chunks_of_a_few_lines_mean_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks of about 40 bytes: a line or two each, so every rule is checked across chunk boundaries
    # (quotes, line ends, empty ids, a duplicate in another chunk, a blank last chunk).
    monkeypatch.setattr(crm_columnar, "CHUNK_BYTES", 40)
    rng = random.Random(20261130)
    readers = [assert_same_meaning(random_file(rng)) for _ in range(300)]
    assert readers.count("columnar") > 50
    duplicate_in_a_later_chunk = rows_file(
        *(f"C{index},Name {index},DE,saas," for index in range(8)), "C3,X,,,"
    )
    assert assert_same_meaning(duplicate_in_a_later_chunk) is None  # the precise parser's error


def test_a_file_is_read_in_chunks_of_whole_lines_that_add_up_to_the_file() -> None:
    lines = [f"C{index},Company {index},DE,saas,2026-11-19T10:00:{index % 60:02d}Z" for index in range(1_000)]
    data = rows_file(*lines)
    reading = crm_columnar.ColumnarCrm(data, "crm.csv", chunk_bytes=1_000)
    chunks = list(reading.chunks())
    assert len(chunks) > 20
    assert [row for chunk in chunks for row in chunk.to_pylist()] == precise(data)
    assert all(chunk.num_rows > 0 for chunk in chunks)


def test_a_chunk_that_cannot_be_proven_stops_the_reading_there_after_the_chunks_before_it() -> None:
    good = [f"C{index},Company {index},DE,saas," for index in range(200)]
    data = rows_file(*good, 'C200,"two\r\nlines",DE,saas,', "C201,B,DE,saas,")
    chunks = crm_columnar.ColumnarCrm(data, "crm.csv", chunk_bytes=500).chunks()
    read = []
    with pytest.raises(crm_columnar.NotProvable, match="quoted line break"):
        for chunk in chunks:
            read.extend(chunk["company_id"].to_pylist())
    # The chunks before the bad line's were read (lazily, in order); nothing after it.
    assert 150 <= len(read) < 200
    assert read == [f"C{index}" for index in range(len(read))]


def test_a_file_the_whole_file_checks_rule_out_is_refused_before_any_chunk_is_read() -> None:
    with pytest.raises(crm_columnar.NotProvable, match="carriage returns"):
        crm_columnar.ColumnarCrm((HEADER + "C1,A,DE,saas,\rC2,B,DE,saas,\r").encode(), "crm.csv")
    with pytest.raises(crm_snapshot.CrmSnapshotError, match="company_id"):
        crm_columnar.ColumnarCrm(b"name,country\r\nA,DE\r\n", "crm.csv")
