"""The data-quality rules, written once here and kept as Great Expectations suites under ``expectations/``.

The JSON files are what the pipeline loads (:mod:`pipeline.validation` never rebuilds a suite); this
script writes them, or checks that they are what it would write, so that a rule change shows in review
as a diff of a readable file::

    python -m pipeline suites --check     # exit 1 and a diff when a file is stale
    python -m pipeline suites --write     # regenerate expectations/*.json

Conventions the validation code relies on:

* every expectation carries ``meta.check``, a stable name used in error messages, results and tests;
* ``severity: warning`` marks a check that is logged and reported but never fails the day;
* ``meta.override == "accept_row_drop"`` marks a check that ``RunDaily --accept-row-drop`` may accept
  (the day-over-day row drop, and an empty usage day);
* values that change per run are suite parameters (``{"$PARAMETER": name}``) listed in
  ``meta.parameters``; the validation fills every one of them, on the first day too.

Great Expectations is imported inside the functions: importing it costs seconds.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

from pipeline import project
from pipeline.datasets import CRM, CRM_REQUIRED_COLUMNS, OUTPUT, USAGE

SUITE_FILES = {CRM: "crm_snapshot.json", USAGE: "product_usage.json", OUTPUT: "company_daily_activity.json"}
# meta.override of the checks that RunDaily --accept-row-drop may accept.
OVERRIDE_ROW_DROP = "accept_row_drop"

# ISO 3166-1 alpha-2: the 249 officially assigned codes (from the Debian iso-codes package).
ISO_3166_ALPHA_2 = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split()  # noqa: SIM905 (the block reads like the standard's table)

INTEGER_TYPES = ["int8", "int16", "int32", "int64", "Int8", "Int16", "Int32", "Int64"]


def _meta(check: str, **extra: Any) -> dict[str, Any]:
    return {"check": check, **extra}


def _row_drop(gx: Any, dataset: str) -> Any:
    return gx.expectations.ExpectTableRowCountToBeBetween(
        min_value={"$PARAMETER": "min_row_count"},
        description=(
            "Row count dropped by no more than [validation] max_row_drop against the previous loaded day "
            "(min_row_count is 0 when no day before this one is loaded)"
        ),
        meta=_meta(f"{dataset}.row_drop", override=OVERRIDE_ROW_DROP),
    )


def build_suites() -> dict[str, Any]:
    """The three suites as Great Expectations objects, keyed by dataset."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    expect = gx.expectations
    crm = [
        *(
            expect.ExpectColumnToExist(
                column=name,
                description=f"The snapshot has the required column {name}",
                meta=_meta(f"crm.{name}.exists"),
            )
            for name in CRM_REQUIRED_COLUMNS
        ),
        expect.ExpectColumnValuesToNotBeNull(
            column="company_id",
            description="company_id is never empty",
            meta=_meta("crm.company_id.not_null"),
        ),
        expect.ExpectColumnValuesToBeUnique(
            column="company_id",
            description="company_id is unique in the snapshot",
            meta=_meta("crm.company_id.unique"),
        ),
        expect.ExpectColumnValuesToBeInSet(
            column="country",
            value_set=ISO_3166_ALPHA_2,
            severity="warning",
            description="country is an ISO 3166-1 alpha-2 code (warning only; empty is allowed)",
            meta=_meta("crm.country.iso_3166_alpha_2"),
        ),
        expect.ExpectColumnValuesToBeNull(
            column="last_contact_at_unparseable",
            description=(
                "last_contact_at, where given, parses as a timestamp (last_contact_at_unparseable holds "
                "the values as loaded that do not)"
            ),
            meta=_meta("crm.last_contact_at.parseable"),
        ),
        expect.ExpectColumnValuesToBeBetween(
            column="last_contact_at",
            max_value={"$PARAMETER": "last_contact_at_max"},
            description=(
                "last_contact_at is not in the future by more than a day "
                "(at most the snapshot date + 2 days, 00:00 UTC)"
            ),
            meta=_meta("crm.last_contact_at.not_in_future"),
        ),
        expect.ExpectTableRowCountToBeBetween(
            min_value=1, description="The snapshot has at least one row", meta=_meta("crm.not_empty")
        ),
        _row_drop(gx, "crm"),
    ]
    usage = [
        expect.ExpectColumnValuesToNotBeNull(
            column="company_id",
            description="company_id is never empty",
            meta=_meta("product_usage.company_id.not_null"),
        ),
        expect.ExpectColumnValuesToBeUnique(
            column="company_id",
            description="company_id is unique for the day",
            meta=_meta("product_usage.company_id.unique"),
        ),
        *(
            check
            for name in ("active_users", "events")
            for check in (
                expect.ExpectColumnValuesToNotBeNull(
                    column=name,
                    description=f"{name} is always given",
                    meta=_meta(f"product_usage.{name}.not_null"),
                ),
                expect.ExpectColumnValuesToBeInTypeList(
                    column=name,
                    type_list=INTEGER_TYPES,
                    description=f"{name} is an integer",
                    meta=_meta(f"product_usage.{name}.integer"),
                ),
                expect.ExpectColumnValuesToBeBetween(
                    column=name,
                    min_value=0,
                    description=f"{name} is >= 0",
                    meta=_meta(f"product_usage.{name}.non_negative"),
                ),
            )
        ),
        expect.ExpectTableRowCountToBeBetween(
            min_value=1,
            description="The API day has at least one row: an empty day never passes silently",
            meta=_meta("product_usage.not_empty", override=OVERRIDE_ROW_DROP),
        ),
        _row_drop(gx, "product_usage"),
    ]
    output = [
        expect.ExpectColumnValuesToNotBeNull(
            column="company_id",
            description="company_id is never empty",
            meta=_meta("company_daily_activity.company_id.not_null"),
        ),
        expect.ExpectColumnValuesToBeUnique(
            column="company_id",
            description="The primary key (activity_date, company_id) is unique: one row per company per day",
            meta=_meta("company_daily_activity.primary_key.unique"),
        ),
        expect.ExpectColumnValuesToNotBeNull(
            column="7d_active_users",
            description="7d_active_users is computed for every row",
            meta=_meta("company_daily_activity.7d_active_users.not_null"),
        ),
        expect.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="7d_active_users",
            column_B="active_users",
            or_equal=True,
            description="7d_active_users >= active_users (the 7-day sum includes the day)",
            meta=_meta("company_daily_activity.7d_active_users.at_least_active_users"),
        ),
        expect.ExpectColumnValuesToBeInSet(
            column="7d_active_users",
            value_set=[0],
            row_condition=Column("is_churn_risk") == True,  # noqa: E712 (a GE condition, not a comparison)
            description="is_churn_risk TRUE implies 7d_active_users = 0",
            meta=_meta("company_daily_activity.is_churn_risk.consistent_with_7d_active_users"),
        ),
        expect.ExpectColumnValuesToBeInSet(
            column="events",
            value_set=[0],
            row_condition=Column("is_churn_risk") == True,  # noqa: E712
            description="is_churn_risk TRUE implies no events on the day",
            meta=_meta("company_daily_activity.is_churn_risk.consistent_with_events"),
        ),
        expect.ExpectTableRowCountToEqual(
            value={"$PARAMETER": "expected_row_count"},
            description=(
                "One row per company of the effective CRM snapshot plus one per orphan (a company with "
                "usage that the snapshot does not know), counted from staging (expected_row_count)"
            ),
            meta=_meta("company_daily_activity.row_count.crm_plus_orphans"),
        ),
        _row_drop(gx, "company_daily_activity"),
    ]
    parameters = {
        "crm": ["last_contact_at_max", "min_row_count"],
        "product_usage": ["min_row_count"],
        "company_daily_activity": ["expected_row_count", "min_row_count"],
    }
    descriptions = {
        "crm": "The CRM daily snapshot of one date, as staged in stg.crm_daily (contract 2, 5)",
        "product_usage": "One day of product usage, as staged in stg.product_usage_daily (contract 3, 5)",
        "company_daily_activity": (
            "One day of analytics.company_daily_activity, inside the merge's transaction (contract 4, 5)"
        ),
    }
    suites = {}
    for dataset, expectations in (("crm", crm), ("product_usage", usage), ("company_daily_activity", output)):
        suites[dataset] = gx.ExpectationSuite(
            name=SUITE_FILES[dataset].removesuffix(".json"),
            expectations=expectations,
            meta={
                "great_expectations_version": gx.__version__,
                "dataset": dataset,
                "description": descriptions[dataset],
                "parameters": parameters[dataset],
                "generated_by": "python -m pipeline suites --write",
            },
        )
    return suites


def _clean(value: Any) -> Any:
    """The suite's JSON without nulls and GE's per-run noise, so the files read (and diff) well."""
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def render_suites() -> dict[str, str]:
    """File name -> the exact text this script writes."""
    rendered = {}
    for dataset, suite in build_suites().items():
        document = _clean(suite.to_json_dict())
        rendered[SUITE_FILES[dataset]] = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return rendered


def stale_files(directory: Path | None = None) -> dict[str, str]:
    directory = directory or project.expectations_dir()
    """File name -> unified diff, for every suite file that differs from what the rules produce."""
    differences = {}
    for name, text in render_suites().items():
        path = directory / name
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            differences[name] = "".join(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    fromfile=f"{path} (on disk)",
                    tofile=f"{path} (from pipeline/quality/suites.py)",
                )
            )
    return differences


def write_suites(directory: Path | None = None) -> list[Path]:
    directory = directory or project.expectations_dir()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_suites().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline suites", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 with a diff when a suite file is stale")
    action.add_argument("--write", action="store_true", help="regenerate the suite files")
    parser.add_argument("--dir", type=Path, default=None, help="default: expectations/ of the project")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_suites(args.dir):
            print(f"wrote {path}")
        return 0
    differences = stale_files(args.dir)
    for diff in differences.values():
        sys.stdout.write(diff)
    if differences:
        print(
            f"{len(differences)} suite file(s) differ from pipeline/quality/suites.py: "
            "run python -m pipeline suites --write and commit the diff"
        )
        return 1
    print(f"the suites in {args.dir or project.expectations_dir()} are up to date")
    return 0
