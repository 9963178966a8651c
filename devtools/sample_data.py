"""Deterministic synthetic company universe: CRM snapshots and product-usage rows.

The demo, the tests and the benchmarks need data that looks like production without being
production: companies that sign up over time, get renamed, churn, use the product on weekdays more
than at weekends, carry awkward names (commas, quotes, non-ASCII, an HTML payload) and mixed
timestamp formats. Everything here is a pure function of ``(n_companies, seed, day)``:

* a per-company *profile table* is drawn once from ``default_rng([seed, 0])``;
* every per-day draw comes from a generator seeded with ``[seed, stream, day.toordinal()]``, and
  always draws the same number of values in the same order, so a day's rows never depend on which
  other days were generated before, or in which order.

Company ids are ``C`` followed by six digits (``C000001`` ...). CRM companies never reach
``C900000``: that range is reserved for *orphans*, companies the product API knows but the CRM never
does (about 2% of usage rows). A universe with 900,000 companies or more (only useful for API
benchmarks) widens every id to seven digits, with the same rule (orphans from ``C9000000``).

Command line::

    python -m devtools.sample_data --out var/sample/crm --start 2026-11-01 --end 2026-11-14 \\
        --companies 500 --seed 42 [--template crm_{date}.csv]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CRM_COLUMNS = ("company_id", "company_name", "country", "industry_tag", "last_contact_at")
DEFAULT_TEMPLATE = "crm_{date}.csv"

# Independent random streams: changing how one of them is used never shifts the others.
_PROFILE_STREAM = 0
_NAME_STREAM = 1
_USAGE_STREAM = 2

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_OLD_SIGNUPS = (dt.date(2018, 1, 1).toordinal(), dt.date(2025, 12, 31).toordinal())
_NEW_SIGNUPS = (dt.date(2026, 1, 1).toordinal(), dt.date(2027, 12, 31).toordinal())
_NEW_SIGNUP_SHARE = 0.08
# Churn dates are spread evenly (with a little jitter) over this range, so that any two-week window
# inside it sees some companies reach seven days of silence (for universes of ~500 companies or more).
_CHURN_RANGE = (dt.date(2026, 1, 1).toordinal(), dt.date(2027, 6, 30).toordinal())
_RENAME_RANGE = (dt.date(2026, 1, 1).toordinal(), dt.date(2027, 12, 31).toordinal())
_RENAME_SHARE = 0.02
_SCRIPT_NAME_SHARE = 0.004  # names carrying an HTML payload, to prove escaping downstream
_ORPHAN_ROW_SHARE = 0.02
_EXPLICIT_ZERO_SHARE = 0.08  # a company without usage that day still gets a row of zeros
_EVENTS_ONLY_SHARE = 0.01  # ... or a row with events but no active users (background jobs)

# Usage profiles.
STEADY, WEEKLY, INTERMITTENT, CHURNER, DORMANT = range(5)
PROFILE_NAMES = ("steady", "weekly", "intermittent", "churner", "dormant")
_PROFILE_WEIGHTS = (0.45, 0.25, 0.13, 0.12, 0.05)

# A weighted, plausible customer mix for a European/US SaaS vendor.
_COUNTRIES = {
    "US": 28, "GB": 10, "DE": 10, "FR": 7, "NL": 4, "ES": 4, "IT": 4, "CA": 5, "SE": 3, "PL": 3,
    "AU": 3, "JP": 3, "BR": 3, "IN": 4, "CH": 2, "AT": 2, "BE": 1, "DK": 1, "NO": 1, "FI": 1,
    "IE": 1, "PT": 1, "MX": 1, "SG": 1, "CZ": 1,
}  # fmt: skip
_INDUSTRIES = {
    "software": 30, "fintech": 12, "retail": 14, "healthcare": 10, "manufacturing": 12,
    "logistics": 8, "education": 7, "media": 7,
}  # fmt: skip
# Legal-form suffixes by country, so that names look like they belong where the company is.
_SUFFIXES = {
    "US": ("Inc.", "LLC", "Corp."), "CA": ("Inc.", "Ltd."), "GB": ("Ltd", "PLC"), "IE": ("Ltd",),
    "DE": ("GmbH", "AG", "KG"), "AT": ("GmbH", "AG"), "CH": ("AG", "GmbH", "SA"),
    "FR": ("SAS", "SA", "SARL"), "NL": ("B.V.", "N.V."), "BE": ("NV", "SRL"), "ES": ("S.L.", "S.A."),
    "IT": ("S.p.A.", "S.r.l."), "SE": ("AB",), "NO": ("AS",), "DK": ("A/S", "ApS"), "FI": ("Oy",),
    "PL": ("sp. z o.o.", "S.A."), "CZ": ("s.r.o.",), "PT": ("Lda.",), "BR": ("Ltda.",),
    "MX": ("S.A. de C.V.",), "JP": ("K.K.",), "AU": ("Pty Ltd",), "IN": ("Pvt Ltd",),
    "SG": ("Pte. Ltd.",),
}  # fmt: skip
_STEMS = (
    "Acme", "Globex", "Initech", "Umbrella", "Northwind", "Contoso", "Fabrikam", "Tailspin", "Wingtip",
    "Litware", "Proseware", "Lucerne", "Vandelay", "Hooli", "Stark", "Wayne", "Blue Harbor", "Red Rock",
    "Silver Lake", "Granite", "Evergreen", "Summit", "Pioneer", "Atlas", "Orion", "Nimbus", "Quantum",
    "Vertex", "Helix", "Cobalt", "Müller", "Søndergaard", "Łukasiewicz", "Ærø", "Citroën", "Niño",
    "Žižek", "Björk", "Østergaard", "Dvořák", "Nakamura", "Zürich", "Kraków", "Göteborg", "São Paulo",
    "Crème", "Façade", "Ångström", "Weiß", "Ñandú", "O'Reilly", "D'Angelo", "McAllister", "Smith",
    "Jones", "García", "Schäfer", "Lefèvre", "Kowalski", "Tanaka", "Rossi", "Jansen", "Nielsen",
)  # fmt: skip
_NOUNS = (
    "Analytics", "Systems", "Logistics", "Foods", "Labs", "Digital", "Energy", "Health", "Robotics",
    "Textiles", "Media", "Partners", "Software", "Motors", "Capital", "Pharma", "Solar", "Ventures",
    "Studios", "Holdings", "Works", "Consulting", "Networks", "Cloud", "Data", "Retail", "Bau",
    "Technik", "Industries", "Group",
)  # fmt: skip
_HEIRS = ("Söhne", "Sons", "Fils", "Hijos", "Figli", "Partners", "Co.")
# CRM export styles for last_contact_at: (suffix, UTC offset in minutes, share of companies).
_TIMESTAMP_STYLES = (
    ("", 0, 0.40),
    ("Z", 0, 0.25),
    ("+02:00", 120, 0.10),
    ("+01:00", 60, 0.05),
    ("-05:00", -300, 0.10),
    ("-08:00", -480, 0.05),
    ("+05:30", 330, 0.05),
)


def _id_width(n_companies: int) -> int:
    """Digits after ``C``: six unless the CRM range would reach the orphan range."""
    width = 6
    while n_companies >= 9 * 10 ** (width - 1):
        width += 1
    return width


def _weighted_choice(rng: np.random.Generator, weights: Sequence[float], size: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=size, p=p / p.sum())


@dataclass(frozen=True)
class UsageColumns:
    """One day's usage rows as parallel numpy arrays, sorted by company id.

    The simulator keeps these (a few bytes per row) instead of a million dicts, and turns only the
    slice it serves into rows.
    """

    company_numbers: np.ndarray  # the number after "C"; the id is zero-padded to id_width digits
    active_users: np.ndarray
    events: np.ndarray
    id_width: int

    def __len__(self) -> int:
        return len(self.company_numbers)

    def rows(self, start: int = 0, stop: int | None = None) -> list[dict]:
        """Rows ``start:stop`` as API dicts ``{"company_id", "active_users", "events"}``."""
        fmt = f"C%0{self.id_width}d"
        sl = slice(start, stop)
        return [
            {"company_id": fmt % number, "active_users": users, "events": events}
            for number, users, events in zip(
                self.company_numbers[sl].tolist(),
                self.active_users[sl].tolist(),
                self.events[sl].tolist(),
                strict=True,
            )
        ]

    def json_array(self, start: int = 0, stop: int | None = None, users_key: str = "active_users") -> str:
        """Rows ``start:stop`` as a JSON array text, about four times faster than json.dumps(rows()).

        Safe to format by hand: ids are ``C`` and digits, the values are integers. ``users_key``
        lets the simulator inject schema drift without building dicts.
        """
        template = f'{{"company_id":"C%0{self.id_width}d","{users_key}":%d,"events":%d}}'
        sl = slice(start, stop)
        columns = zip(
            self.company_numbers[sl].tolist(),
            self.active_users[sl].tolist(),
            self.events[sl].tolist(),
            strict=True,
        )
        return "[" + ",".join([template % row for row in columns]) + "]"


class CompanyUniverse:
    """A fixed population of companies whose CRM records and product usage evolve day by day.

    ``CompanyUniverse(n, seed)`` always describes the same companies; :meth:`crm_rows` and
    :meth:`usage_rows` are pure functions of the day.
    """

    def __init__(self, n_companies: int, seed: int) -> None:
        if n_companies < 1:
            raise ValueError(f"n_companies must be at least 1, got {n_companies}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.n_companies = n_companies
        self.seed = seed
        self.id_width = _id_width(n_companies)
        self._orphan_base = 9 * 10 ** (self.id_width - 1)
        # Orphans are drawn from a pool so that the same unknown companies recur across days.
        self._orphan_pool = min(
            max(5, int(np.ceil(0.04 * n_companies))), 10**self.id_width - self._orphan_base
        )
        self._names: list[str] | None = None
        self._draw_profiles()

    # -- the profile table, drawn once -------------------------------------------------------------

    def _draw_profiles(self) -> None:
        n = self.n_companies
        rng = np.random.default_rng([self.seed, _PROFILE_STREAM])

        self.profile = _weighted_choice(rng, _PROFILE_WEIGHTS, n)
        is_churner = self.profile == CHURNER

        # Most companies exist long before any date anyone would load; a few sign up every week.
        new = rng.random(n) < _NEW_SIGNUP_SHARE
        old_signup = rng.integers(_OLD_SIGNUPS[0], _OLD_SIGNUPS[1] + 1, n)
        new_signup = rng.integers(_NEW_SIGNUPS[0], _NEW_SIGNUPS[1] + 1, n)
        # Churners are established customers: they must exist before they can leave.
        self.signup = np.where(new & ~is_churner, new_signup, old_signup)

        # Evenly spaced churn dates (jitter of +-20% of the spacing), handed out in random order.
        churners = np.flatnonzero(is_churner)
        self.churn = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        if len(churners):
            span = _CHURN_RANGE[1] - _CHURN_RANGE[0]
            slots = (np.arange(len(churners)) + 0.5 + rng.uniform(-0.2, 0.2, len(churners))) / len(churners)
            self.churn[rng.permutation(churners)] = _CHURN_RANGE[0] + np.floor(slots * span).astype(np.int64)

        # Typical active users (log-normal: many small customers, a few large ones) and events per user.
        self.level = np.clip(rng.lognormal(np.log(6.0), 1.1, n), 1.0, 20_000.0)
        self.events_per_user = np.clip(rng.lognormal(np.log(25.0), 0.6, n), 1.5, 500.0)
        # Probability of a silent day (no usage at all) on a weekday and at the weekend.
        self.p_silent_weekday = np.where(
            self.profile == INTERMITTENT,
            rng.uniform(0.3, 0.7, n),
            np.where(self.profile == WEEKLY, 0.02, 0.01),
        )
        self.p_silent_weekend = np.where(self.profile == WEEKLY, 0.08, self.p_silent_weekday)

        # CRM attributes.
        self.country_codes = np.array(list(_COUNTRIES), dtype=object)
        self.country = _weighted_choice(rng, list(_COUNTRIES.values()), n)
        self.industry_tags = np.array(list(_INDUSTRIES), dtype=object)
        self.industry = _weighted_choice(rng, list(_INDUSTRIES.values()), n)
        self.renamed = rng.random(n) < _RENAME_SHARE
        self.rename_on = rng.integers(_RENAME_RANGE[0], _RENAME_RANGE[1] + 1, n)
        # Contacts: every `interval` days from `phase`, at a fixed minute of the day; 10% never contacted.
        self.contacted = rng.random(n) < 0.9
        self.contact_interval = rng.integers(3, 121, n)
        self.contact_phase = rng.integers(0, 1_000_000, n) % self.contact_interval
        self.contact_minute = rng.integers(7 * 60, 19 * 60, n)
        self.timestamp_style = _weighted_choice(rng, [s[2] for s in _TIMESTAMP_STYLES], n)

    def profile_name(self, company_id: str) -> str:
        """The usage profile of a CRM company (``steady``, ``weekly``, ...); for tests and demos."""
        return PROFILE_NAMES[self.profile[self._index(company_id)]]

    def churn_date(self, company_id: str) -> dt.date | None:
        """The day a churner's usage stops for good, or None for other profiles."""
        i = self._index(company_id)
        return dt.date.fromordinal(int(self.churn[i])) if self.profile[i] == CHURNER else None

    def signup_date(self, company_id: str) -> dt.date:
        """The first day the company is in the CRM snapshot (and may use the product)."""
        return dt.date.fromordinal(int(self.signup[self._index(company_id)]))

    def _index(self, company_id: str) -> int:
        number = int(company_id[1:])
        if not 1 <= number <= self.n_companies:
            raise KeyError(f"{company_id} is not a CRM company of this universe")
        return number - 1

    def company_id(self, index: int) -> str:
        """The id of the company at 0-based ``index``."""
        return f"C{index + 1:0{self.id_width}d}"

    # -- CRM ---------------------------------------------------------------------------------------

    def _base_names(self) -> list[str]:
        """Current and post-rename names, built once (the only per-company Python loop)."""
        if self._names is None:
            self._names = self._draw_names()
        return self._names

    def _draw_names(self) -> list[str]:
        n = self.n_companies
        rng = np.random.default_rng([self.seed, _NAME_STREAM])
        pattern = rng.random(n)
        stem_a = rng.integers(0, len(_STEMS), n).tolist()
        stem_b = rng.integers(0, len(_STEMS), n).tolist()
        noun = rng.integers(0, len(_NOUNS), n).tolist()
        heir = rng.integers(0, len(_HEIRS), n).tolist()
        suffix_pick = rng.integers(0, 1_000, n).tolist()
        codes = self.country_codes[self.country].tolist()

        names = []
        for i, p in enumerate(pattern.tolist()):
            a, b, nn = _STEMS[stem_a[i]], _STEMS[stem_b[i]], _NOUNS[noun[i]]
            forms = _SUFFIXES.get(codes[i], ("Ltd",))
            s = forms[suffix_pick[i] % len(forms)]
            if p < _SCRIPT_NAME_SHARE:
                name = f"{a} <script>alert(1)</script> {s}"
            elif p < 0.45:
                name = f"{a} {nn} {s}"
            elif p < 0.57:
                name = f"{a} & {_HEIRS[heir[i]]} {s}"  # Müller & Söhne GmbH
            elif p < 0.67:
                name = f"{a} {nn}, {s}"  # Acme Systems, Inc.
            elif p < 0.72:
                name = f'"{a}" {nn}, {s}'  # "Quoted" Holdings, Inc.
            elif p < 0.77:
                name = f"{a}'s {nn}"
            elif p < 0.85:
                name = f"{a} & {b}"
            elif p < 0.93:
                name = f"{a} {nn}"
            else:
                name = a
            names.append(name)
        return names

    def _renamed_name(self, index: int, name: str) -> str:
        """The name a renamed company carries from its rename date on (a rebrand)."""
        noun = _NOUNS[(index * 7 + self.seed) % len(_NOUNS)]
        new = f"{_STEMS[(index * 13 + self.seed) % len(_STEMS)]} {noun}"
        return new if new != name else f"{new} Group"

    def crm_rows(self, day: dt.date) -> list[dict[str, str]]:
        """The CRM snapshot of ``day``: every company signed up by then, values as CSV strings."""
        d = day.toordinal()
        idx = np.flatnonzero(self.signup <= d)

        names = self._base_names()
        names_today = [names[i] for i in idx.tolist()]
        renamed_today = np.flatnonzero(self.renamed[idx] & (self.rename_on[idx] <= d))
        for pos in renamed_today.tolist():
            i = int(idx[pos])
            names_today[pos] = self._renamed_name(i, names[i])

        fmt = f"C%0{self.id_width}d"
        return [
            {
                "company_id": fmt % number,
                "company_name": name,
                "country": country,
                "industry_tag": industry,
                "last_contact_at": contact,
            }
            for number, name, country, industry, contact in zip(
                (idx + 1).tolist(),
                names_today,
                self.country_codes[self.country[idx]].tolist(),
                self.industry_tags[self.industry[idx]].tolist(),
                self._last_contact(idx, d),
                strict=True,
            )
        ]

    def _last_contact(self, idx: np.ndarray, d: int) -> list[str]:
        """ISO timestamps of each company's latest contact strictly before ``day`` ('' if none).

        Contacts happen on a fixed cycle per company. Taking the latest cycle day <= D-1 (in UTC)
        keeps every timestamp before the snapshot day whatever offset it is rendered with.
        """
        interval = self.contact_interval[idx]
        last_day = (d - 1) - ((d - 1 - self.contact_phase[idx]) % interval)
        has_contact = self.contacted[idx] & (last_day >= self.signup[idx])
        utc_seconds = (last_day - _EPOCH_ORDINAL) * 86_400 + self.contact_minute[idx] * 60
        style = self.timestamp_style[idx]
        offsets = np.array([s[1] for s in _TIMESTAMP_STYLES], dtype=np.int64) * 60
        local = (utc_seconds + offsets[style]).astype("datetime64[s]")
        text = np.datetime_as_string(local, unit="s").tolist()
        suffixes = [s[0] for s in _TIMESTAMP_STYLES]
        return [
            t + suffixes[st] if ok else ""
            for t, st, ok in zip(text, style.tolist(), has_contact.tolist(), strict=True)
        ]

    # -- product usage -----------------------------------------------------------------------------

    def usage_columns(self, day: dt.date) -> UsageColumns:
        """The API's usage rows for ``day`` as numpy columns (see :meth:`usage_rows`)."""
        n = self.n_companies
        d = day.toordinal()
        rng = np.random.default_rng([self.seed, _USAGE_STREAM, d])
        weekend = day.weekday() >= 5

        # Every draw below has a fixed size and order, whatever the day: determinism per day.
        u_silent = rng.random(n)
        noise = rng.normal(0.0, 0.15, n)
        u_zero = rng.random(n)
        background_events = 1 + rng.integers(0, 40, n)

        signed_up = self.signup <= d
        alive = signed_up & (d < self.churn) & (self.profile != DORMANT)
        p_silent = self.p_silent_weekend if weekend else self.p_silent_weekday
        active = alive & (u_silent >= p_silent)

        factor = np.where((self.profile == WEEKLY) & weekend, 0.3, 1.0)
        lam_users = np.where(active, self.level * factor * np.exp(noise - 0.01125), 0.0)
        users = np.where(active, np.maximum(1, rng.poisson(lam_users)), 0)
        events = users + rng.poisson(users * (self.events_per_user - 1.0))

        # No usage: usually no row; sometimes explicit zeros; sometimes background events without users
        # (only for companies still customers, so churners and dormant companies stay truly silent).
        explicit_zero = signed_up & ~active & (u_zero < _EXPLICIT_ZERO_SHARE)
        events_only = (
            alive
            & ~active
            & (u_zero >= _EXPLICIT_ZERO_SHARE)
            & (u_zero < _EXPLICIT_ZERO_SHARE + _EVENTS_ONLY_SHARE)
        )
        events = np.where(events_only, background_events, events)
        present = np.flatnonzero(active | explicit_zero | events_only)

        # Orphans: ~2% of the day's rows, companies from a range the CRM never uses.
        k = min(
            int(rng.binomial(len(present), _ORPHAN_ROW_SHARE / (1 - _ORPHAN_ROW_SHARE))), self._orphan_pool
        )
        orphan_numbers = self._orphan_base + np.sort(rng.choice(self._orphan_pool, size=k, replace=False))
        orphan_users = rng.poisson(3.0, k)
        orphan_events = orphan_users * 20 + rng.poisson(5.0, k)

        return UsageColumns(
            company_numbers=np.concatenate([present + 1, orphan_numbers]).astype(np.int64),
            active_users=np.concatenate([users[present], orphan_users]).astype(np.int64),
            events=np.concatenate([events[present], orphan_events]).astype(np.int64),
            id_width=self.id_width,
        )

    def usage_rows(self, day: dt.date) -> list[dict]:
        """The API's usage rows for ``day``: ``{"company_id", "active_users", "events"}``.

        Sorted by company_id, ids unique. Companies without usage are mostly absent, sometimes
        present with zeros; about 2% of rows belong to orphans (ids >= C900000).
        """
        return self.usage_columns(day).rows()


# -- CSV files -------------------------------------------------------------------------------------


def write_crm_csv(universe: CompanyUniverse, day: dt.date, path: str | os.PathLike[str]) -> Path:
    """Write the CRM snapshot of ``day`` to ``path`` (UTF-8, RFC 4180, header row), atomically.

    The file is written next to its destination and moved into place, so a reader (or a crash)
    never sees half a snapshot.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CRM_COLUMNS, quoting=csv.QUOTE_MINIMAL)
            writer.writeheader()
            writer.writerows(universe.crm_rows(day))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_crm_snapshots(
    directory: str | os.PathLike[str],
    start: dt.date,
    end: dt.date,
    n_companies: int,
    seed: int,
    template: str = DEFAULT_TEMPLATE,
) -> list[Path]:
    """Write one CRM snapshot per day from ``start`` to ``end`` inclusive; returns the paths."""
    if "{date}" not in template:
        raise ValueError(f"template must contain {{date}}, got {template!r}")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    universe = CompanyUniverse(n_companies, seed)
    directory = Path(directory)
    paths = []
    day = start
    while day <= end:
        paths.append(write_crm_csv(universe, day, directory / template.format(date=day.isoformat())))
        day += dt.timedelta(days=1)
    return paths


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.sample_data", description="Write synthetic daily CRM snapshots."
    )
    parser.add_argument("--out", required=True, type=Path, help="directory to write the files into")
    parser.add_argument("--start", required=True, type=dt.date.fromisoformat, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", required=True, type=dt.date.fromisoformat, help="last day (inclusive)")
    parser.add_argument("--companies", type=int, default=500, help="size of the universe (default 500)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="file name template with {date}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        paths = write_crm_snapshots(args.out, args.start, args.end, args.companies, args.seed, args.template)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    print(f"{len(paths)} CRM snapshot(s), {args.companies} companies, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
