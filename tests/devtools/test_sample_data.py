"""The synthetic company universe: deterministic, realistic enough, and fast."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from devtools import sample_data
from devtools.sample_data import CRM_COLUMNS, CompanyUniverse, write_crm_csv, write_crm_snapshots

DAY = dt.date(2026, 11, 20)
# Every ISO 3166-1 alpha-2 code, as one string to keep the file short.
_ISO_CODES = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT "
    "BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH "
    "ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT "
    "HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS "
    "LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI "
    "NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG "
    "SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG "
    "UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW"
)
ISO_COUNTRIES = set(_ISO_CODES.split(" "))


def days(start: dt.date, count: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(count)]


@pytest.fixture(scope="module")
def universe() -> CompanyUniverse:
    return CompanyUniverse(5000, seed=42)


@pytest.fixture(scope="module")
def usage_by_day(universe: CompanyUniverse) -> dict[dt.date, list[dict]]:
    return {day: universe.usage_rows(day) for day in days(dt.date(2026, 11, 1), 30)}


# -- determinism -----------------------------------------------------------------------------------


def test_same_inputs_give_identical_rows_whatever_the_call_order() -> None:
    a, b = CompanyUniverse(800, seed=7), CompanyUniverse(800, seed=7)
    d1, d2 = dt.date(2026, 11, 3), dt.date(2026, 11, 9)
    first_a = (a.crm_rows(d1), a.usage_rows(d1))
    a.usage_rows(dt.date(2027, 2, 1))  # unrelated days in between must not shift anything
    second_a = (a.crm_rows(d2), a.usage_rows(d2))
    second_b = (b.crm_rows(d2), b.usage_rows(d2))
    first_b = (b.crm_rows(d1), b.usage_rows(d1))
    assert first_a == first_b
    assert second_a == second_b
    assert a.usage_rows(d1) == first_a[1]  # and repeatable on the same object


def test_seed_and_day_change_the_data() -> None:
    assert CompanyUniverse(300, 1).usage_rows(DAY) != CompanyUniverse(300, 2).usage_rows(DAY)
    u = CompanyUniverse(300, 1)
    assert u.usage_rows(DAY) != u.usage_rows(DAY + dt.timedelta(days=1))


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_companies"):
        CompanyUniverse(0, 1)
    with pytest.raises(ValueError, match="seed"):
        CompanyUniverse(10, -1)


# -- CRM snapshot ------------------------------------------------------------------------------------


def test_crm_rows_are_strings_with_the_contract_columns(universe: CompanyUniverse) -> None:
    rows = universe.crm_rows(DAY)
    assert rows
    for row in rows:
        assert tuple(row) == CRM_COLUMNS
        assert all(isinstance(value, str) for value in row.values())
    ids = [row["company_id"] for row in rows]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"C\d{6}", i) and i < "C900000" for i in ids)


def test_companies_sign_up_over_time_and_most_exist_before_2026(universe: CompanyUniverse) -> None:
    early = len(universe.crm_rows(dt.date(2026, 1, 1)))
    assert early >= 0.85 * universe.n_companies
    counts = [len(universe.crm_rows(day)) for day in days(dt.date(2026, 11, 1), 14)]
    assert counts == sorted(counts)  # nobody leaves the CRM
    assert counts[-1] > counts[0]  # and a few join every week
    late = {r["company_id"] for r in universe.crm_rows(dt.date(2027, 12, 31))}
    assert len(late) == universe.n_companies


def test_countries_are_a_weighted_iso_mix_and_industries_few(universe: CompanyUniverse) -> None:
    rows = universe.crm_rows(DAY)
    countries = Counter(r["country"] for r in rows)
    assert set(countries) <= ISO_COUNTRIES
    assert len(countries) >= 15
    assert countries.most_common(1)[0][0] == "US"
    assert 4 <= len({r["industry_tag"] for r in rows}) <= 12


def test_last_contact_mixes_formats_and_is_never_after_the_snapshot_day(universe: CompanyUniverse) -> None:
    rows = universe.crm_rows(DAY)
    values = [r["last_contact_at"] for r in rows]
    assert "" in values
    kinds = Counter()
    for value in filter(None, values):
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            kinds["naive"] += 1
            parsed = parsed.replace(tzinfo=dt.UTC)  # naive means UTC
        else:
            kinds[value[19:]] += 1
        assert parsed.date() <= DAY  # the wall-clock date as written
        assert parsed.astimezone(dt.UTC).date() <= DAY  # and the instant
    assert kinds["naive"] and kinds["Z"]
    assert any(k.startswith("+") for k in kinds) and any(k.startswith("-") for k in kinds)


def test_names_carry_the_awkward_characters(universe: CompanyUniverse) -> None:
    names = [r["company_name"] for r in universe.crm_rows(DAY)]
    joined = "\n".join(names)
    for needle in (",", '"', "'", "&"):
        assert needle in joined
    assert any(not name.isascii() for name in names)
    assert any("<script>alert(1)</script>" in name for name in names)
    assert any(re.fullmatch(r".+ & .+ GmbH", name) and not name.isascii() for name in names)


def test_a_few_companies_get_renamed_on_some_date(universe: CompanyUniverse) -> None:
    before = {r["company_id"]: r["company_name"] for r in universe.crm_rows(dt.date(2026, 1, 1))}
    after = {r["company_id"]: r["company_name"] for r in universe.crm_rows(dt.date(2027, 12, 31))}
    renamed = [cid for cid, name in before.items() if after[cid] != name]
    assert 0 < len(renamed) < 0.05 * len(before)
    # The change is a step: exactly one day where the name differs from the day before.
    cid = renamed[0]
    names = [
        next(r["company_name"] for r in universe.crm_rows(day) if r["company_id"] == cid)
        for day in days(dt.date(2026, 1, 1), 730)[::30]
    ]
    assert len(set(names)) == 2
    assert names == sorted(names, key=lambda name: name != names[0])


# -- usage --------------------------------------------------------------------------------------------


def test_usage_rows_are_sorted_unique_and_well_typed(usage_by_day: dict[dt.date, list[dict]]) -> None:
    for rows in usage_by_day.values():
        ids = [r["company_id"] for r in rows]
        assert ids == sorted(ids)
        assert len(ids) == len(set(ids))
        for row in rows:
            assert tuple(row) == ("company_id", "active_users", "events")
            assert re.fullmatch(r"C\d{6}", row["company_id"])
            assert type(row["active_users"]) is int and type(row["events"]) is int
            assert row["active_users"] >= 0 and row["events"] >= 0


def test_explicit_zero_rows_and_events_without_users_exist(usage_by_day: dict[dt.date, list[dict]]) -> None:
    rows = [r for day_rows in usage_by_day.values() for r in day_rows]
    assert any(r["active_users"] == 0 and r["events"] == 0 for r in rows)
    assert any(r["active_users"] == 0 and r["events"] > 0 for r in rows)


def test_orphans_are_about_two_percent_and_unknown_to_the_crm(
    universe: CompanyUniverse, usage_by_day: dict[dt.date, list[dict]]
) -> None:
    crm_ever = {r["company_id"] for r in universe.crm_rows(dt.date(2030, 1, 1))}
    for rows in usage_by_day.values():
        orphans = [r["company_id"] for r in rows if r["company_id"] >= "C900000"]
        assert 0.01 <= len(orphans) / len(rows) <= 0.035
        assert not crm_ever.intersection(orphans)
        assert {r["company_id"] for r in rows} - set(orphans) <= crm_ever


def test_churners_go_silent_for_good(
    universe: CompanyUniverse, usage_by_day: dict[dt.date, list[dict]]
) -> None:
    checked = 0
    for row in usage_by_day[dt.date(2026, 11, 1)]:
        cid = row["company_id"]
        if cid >= "C900000" or universe.profile_name(cid) != "churner":
            continue
        churn = universe.churn_date(cid)
        if not dt.date(2026, 11, 2) <= churn <= dt.date(2026, 11, 30):
            continue
        for day, rows in usage_by_day.items():
            used = any(r["company_id"] == cid and (r["active_users"] or r["events"]) for r in rows)
            if day >= churn:
                assert not used, (cid, day)
        checked += 1
    assert checked > 0


def test_every_two_week_window_sees_companies_reach_seven_silent_days() -> None:
    """The demo universe (500 companies, seed 42) must exercise the churn-risk flag every fortnight."""
    universe = CompanyUniverse(500, seed=42)
    crossings = Counter()
    for i in range(universe.n_companies):
        churn = universe.churn_date(universe.company_id(i))
        if churn is not None:
            crossings[churn + dt.timedelta(days=6)] += 1  # the 7th silent day
    for start in days(dt.date(2026, 1, 7), 365):
        window = days(start, 14)
        assert any(crossings[day] for day in window), start


def test_weekends_dip_and_daily_row_counts_stay_stable(usage_by_day: dict[dt.date, list[dict]]) -> None:
    users = {day: sum(r["active_users"] for r in rows) for day, rows in usage_by_day.items()}
    weekday = [v for d, v in users.items() if d.weekday() < 5]
    weekend = [v for d, v in users.items() if d.weekday() >= 5]
    assert max(weekend) < min(weekday)
    # The pipeline fails a day whose row count drops > 10%: ordinary days must stay well within that.
    counts = [len(rows) for _, rows in sorted(usage_by_day.items())]
    for previous, current in itertools.pairwise(counts):
        assert current >= 0.95 * previous


def test_usage_starts_at_signup(universe: CompanyUniverse) -> None:
    late_signups = [
        universe.company_id(i)
        for i in range(universe.n_companies)
        if dt.date(2026, 6, 1) <= universe.signup_date(universe.company_id(i)) <= dt.date(2027, 6, 1)
        and universe.profile_name(universe.company_id(i)) == "steady"
    ][:5]
    assert late_signups
    for cid in late_signups:
        signup = universe.signup_date(cid)
        before = universe.usage_rows(signup - dt.timedelta(days=1))
        assert cid not in {r["company_id"] for r in before}
        assert cid not in {r["company_id"] for r in universe.crm_rows(signup - dt.timedelta(days=1))}
        assert cid in {r["company_id"] for r in universe.crm_rows(signup)}
        seen = sum(cid in {r["company_id"] for r in universe.usage_rows(day)} for day in days(signup, 5))
        assert seen >= 3


def test_large_universes_widen_ids_but_keep_the_orphan_rule() -> None:
    assert sample_data._id_width(899_999) == 6
    assert sample_data._id_width(900_000) == 7


def test_100k_companies_is_fast() -> None:
    universe = CompanyUniverse(100_000, seed=1)
    started = time.perf_counter()
    usage = universe.usage_rows(DAY)
    usage_seconds = time.perf_counter() - started
    started = time.perf_counter()
    crm = universe.crm_rows(DAY)
    crm_seconds = time.perf_counter() - started
    assert len(usage) > 50_000 and len(crm) > 90_000
    assert usage_seconds < 1.0
    assert crm_seconds < 2.5  # about 0.3 s on a laptop; generous for shared CI runners


# -- CSV files --------------------------------------------------------------------------------------


def test_csv_round_trips_through_the_csv_module(tmp_path: Path, universe: CompanyUniverse) -> None:
    path = write_crm_csv(universe, DAY, tmp_path / "crm.csv")
    raw = path.read_bytes()
    assert raw.startswith(b"company_id,company_name,country,industry_tag,last_contact_at\r\n")
    with path.open(encoding="utf-8", newline="") as handle:
        assert list(csv.DictReader(handle)) == universe.crm_rows(DAY)
    assert b'"""' in raw  # names with quotes are quoted and their quotes doubled
    assert [p.name for p in tmp_path.iterdir()] == ["crm.csv"]  # no temp file left behind


def test_write_snapshots_one_file_per_day_inclusive(tmp_path: Path) -> None:
    paths = write_crm_snapshots(tmp_path / "crm", dt.date(2026, 11, 1), dt.date(2026, 11, 3), 50, 3)
    assert [p.name for p in paths] == ["crm_2026-11-01.csv", "crm_2026-11-02.csv", "crm_2026-11-03.csv"]
    assert all(p.exists() for p in paths)
    custom = write_crm_snapshots(tmp_path, DAY, DAY, 50, 3, template="snap-{date}.csv")
    assert custom == [tmp_path / "snap-2026-11-20.csv"]
    with pytest.raises(ValueError, match="date"):
        write_crm_snapshots(tmp_path, DAY, DAY, 50, 3, template="no-placeholder.csv")


def test_cli_writes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--start", "2026-11-01", "--end", "2026-11-02", "--companies", "40"]
    assert sample_data.main([*argv, "--seed", "9"]) == 0
    out = capsys.readouterr().out
    assert "crm_2026-11-01.csv" in out and "crm_2026-11-02.csv" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crm_2026-11-01.csv", "crm_2026-11-02.csv"]
    assert sample_data.main([*argv, "--template", "nothing.csv"]) == 2
