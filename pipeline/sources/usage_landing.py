"""The usage pages of a day, landed raw: fetch, resume after a crash, replay without the API.

Every page is written atomically with its cursor as ``page-00001.json`` + ``page-00001.meta.json``, in
order (the next page is asked for while one is landed and checked; nothing is landed after a bad page);
the manifest (page count, row count, checksums) is written last and never for a partial day. A killed
fetch resumes after the last landed page; staging replays the landed pages.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pipeline import clock, files
from pipeline.datasets import USAGE
from pipeline.prefetch import Prefetched
from pipeline.sources import landing
from pipeline.sources.product_api import (
    LandingIntegrityError,
    ProductApiClient,
    ProductApiError,
    UsagePageError,
)
from pipeline.sources.usage_pages import (
    DecodedPage,
    DuplicateTracker,
    UsageColumns,
    UsagePage,
    checked_usage_page,
    decode_usage_page,
    parse_usage_page,
    parse_usage_page_columns,
    provable_columns,
    usage_schema,
)

# A landed page as parsed: rows (UsagePage) or columns (UsageColumns).
PageT = TypeVar("PageT", UsagePage, UsageColumns)

log = logging.getLogger(__name__)


PAGE_NAME = "page-{number:05d}.json"
PAGE_META_NAME = "page-{number:05d}.meta.json"


ProgressCallback = Callable[[int, int], None]  # (pages landed, rows landed)


def fetch_day(
    client: ProductApiClient,
    day: dt.date,
    data_dir: Path,
    *,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Land every page of ``day`` under the raw area and write the manifest last; returns the manifest.

    Pages already landed by an earlier, interrupted run are kept and not fetched again.
    """
    directory = landing.day_dir(data_dir, USAGE, day)
    directory.mkdir(parents=True, exist_ok=True)
    existing = landing.read_manifest(directory)
    if existing is not None:
        return existing
    _remove_partial_writes(directory)
    tracker = DuplicateTracker(day)
    pages_meta: list[dict[str, Any]] = []
    cursor: str | None = None
    cursors_used: set[str | None] = {None}
    rows = 0
    for meta, page in _resume(directory, day):
        tracker.add(page)
        pages_meta.append(meta)
        rows += page.row_count
        cursors_used.add(meta.get("cursor"))
        cursor = page.next_cursor
        client.stats.pages_resumed += 1
    if pages_meta:
        log.info("resuming the fetch of %s after %d landed pages (%d rows)", day, len(pages_meta), rows)
        if progress:
            progress(len(pages_meta), rows)
    if pages_meta and cursor is None:
        pass  # every page was landed before the interruption; only the manifest is missing
    else:
        pages = _fetched_pages(client, day, directory, cursor, len(pages_meta) + 1, cursors_used)
        # The API builds the next page while this one is landed and checked. A request in flight when a
        # page fails is not waited for: it may retry for minutes, and its page would be dropped anyway.
        with Prefetched(pages, name="usage-fetch", wait_on_close=False) as fetched:
            for fetched_page in fetched:
                number = fetched_page.number
                meta = _land_page(directory, number, fetched_page.raw, fetched_page.cursor)
                decoded = fetched_page.decoded
                if isinstance(decoded, UsagePageError):
                    raise decoded  # landed first: the raw page is kept for inspection
                page = decoded if isinstance(decoded, UsageColumns) else checked_usage_page(decoded)
                tracker.add(page)
                pages_meta.append(meta)
                rows += page.row_count
                client.stats.pages_fetched += 1
                if progress:
                    progress(len(pages_meta), rows)
                if fetched_page.loops:
                    raise UsagePageError(
                        f"usage page {number} of {day.isoformat()} ({directory / meta['file']}): its "
                        "next_cursor was already followed on an earlier page; the API is paginating in a loop"
                    )
    client.stats.rows = rows
    manifest = {
        "dataset": USAGE,
        "date": day.isoformat(),
        "base_url": client.settings.base_url,
        "page_size": client.settings.page_size,
        "page_count": len(pages_meta),
        "row_count": rows,
        "pages": pages_meta,
    }
    manifest["fetched_at"] = manifest["landing_id"] = clock.utc_timestamp()
    if rows == 0:
        log.warning(
            "product usage for %s has zero rows: the validation step decides whether that passes", day
        )
    files.write_json_atomic(directory / landing.MANIFEST_NAME, manifest)
    return manifest


@dataclass(frozen=True)
class _FetchedPage:
    """A page as the API sent it: its rows as columns where every rule provably holds for them, else its
    JSON decoded (rows checked by the caller), or the error that decoding it raised."""

    number: int
    cursor: str | None  # the cursor it was asked for with
    raw: bytes
    decoded: UsageColumns | DecodedPage | UsagePageError
    loops: bool = False  # its next_cursor was followed before: the last page asked for


def _fetched_pages(
    client: ProductApiClient,
    day: dt.date,
    directory: Path,
    cursor: str | None,
    number: int,
    cursors_used: set[str | None],
) -> Iterator[_FetchedPage]:
    """The pages of ``day`` from page ``number`` (asked for with ``cursor``) to the last, in order, each
    asked for once the one before is decoded. Ends after a page that is not valid JSON or whose
    next_cursor loops: the caller lands it before it raises."""
    followed = set(cursors_used)
    while True:
        raw = client.get_usage_page(day, cursor, number)
        # Read in C (pyarrow mostly without the GIL) in this thread; a page it cannot prove goes by json.
        decoded: UsageColumns | DecodedPage | None = provable_columns(raw, day, number)
        if decoded is None:
            try:
                decoded = decode_usage_page(raw, day, number, directory / PAGE_NAME.format(number=number))
            except UsagePageError as error:
                yield _FetchedPage(number, cursor, raw, error)
                return
        following = decoded.next_cursor
        loops = following is not None and following in followed
        yield _FetchedPage(number, cursor, raw, decoded, loops=loops)
        if following is None or loops:
            return
        followed.add(following)
        cursor, number = following, number + 1


def _remove_partial_writes(directory: Path) -> None:
    """Temporary files of a write that a killed process never finished (never part of a landing)."""
    for partial in directory.glob(".page-*.part"):
        log.info("removing %s, the partial write of an interrupted fetch", partial)
        partial.unlink(missing_ok=True)


def _land_page(directory: Path, number: int, raw: bytes, cursor: str | None) -> dict[str, Any]:
    """Write the page's bytes, then the record of how it was fetched (its presence marks the page landed)."""
    name = PAGE_NAME.format(number=number)
    files.write_atomic(directory / name, raw)
    meta = {
        "page": number,
        "file": name,
        "cursor": cursor,
        "bytes": len(raw),
        "sha256": files.sha256_bytes(raw),
        "fetched_at": clock.utc_timestamp(),
    }
    files.write_json_atomic(directory / PAGE_META_NAME.format(number=number), meta)
    return meta


def _resume(directory: Path, day: dt.date) -> Iterator[tuple[dict[str, Any], UsageColumns | UsagePage]]:
    """Pages landed by an earlier run, in order, while they are intact and valid.

    The first page that is missing its record, fails its checksum or does not parse is set aside
    (renamed ``*.rejected-<time>``, kept for inspection) and fetched again with the cursor recorded for it.
    """
    number = 0
    while True:
        number += 1
        page_path = directory / PAGE_NAME.format(number=number)
        meta_path = directory / PAGE_META_NAME.format(number=number)
        if not meta_path.exists() or not page_path.exists():
            return
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        raw = page_path.read_bytes()
        try:
            if files.sha256_bytes(raw) != meta["sha256"]:
                raise LandingIntegrityError(
                    f"{page_path}: checksum differs from the one recorded when it landed"
                )
            page = parse_usage_page_columns(raw, day, number, page_path)
        except ProductApiError as error:
            log.warning("set aside landed page %s to fetch it again: %s", page_path, error)
            stamp = clock.utc_timestamp().replace(":", "")
            page_path.rename(page_path.with_name(f"{page_path.name}.rejected-{stamp}"))
            meta_path.unlink()
            # Later pages were fetched from this page's cursor and are no longer trustworthy.
            _discard_pages_after(directory, number)
            return
        yield meta, page


def _discard_pages_after(directory: Path, number: int) -> None:
    later = number + 1
    while (directory / PAGE_NAME.format(number=later)).exists():
        (directory / PAGE_NAME.format(number=later)).unlink()
        (directory / PAGE_META_NAME.format(number=later)).unlink(missing_ok=True)
        later += 1


def read_landed_usage(data_dir: Path, day: dt.date) -> tuple[dict[str, Any], list[tuple[str, int, int]]]:
    """Replay a complete landing from disk (no API call): the manifest and every row, checked again."""
    manifest, pages = _landed_pages(data_dir, day)
    tracker = DuplicateTracker(day)
    rows: list[tuple[str, int, int]] = []
    for page in pages:
        tracker.add(page)
        rows.extend(page.rows)
    _check_row_count(data_dir, day, manifest, len(rows))
    return manifest, rows


def read_landed_usage_table(data_dir: Path, day: dt.date) -> tuple[dict[str, Any], Any]:
    """:func:`read_landed_usage` as a ``pyarrow.Table`` (company_id, active_users, events), built page by
    page: a million-row day is never a million Python tuples. The same checks; a company_id that appears
    twice is named by replaying the pages with the row-wise check."""
    import pyarrow as pa
    import pyarrow.compute as pc

    manifest, pages = _landed_pages(data_dir, day, parse_usage_page_columns)
    batches = [page.batch for page in pages]
    table = pa.Table.from_batches(batches, schema=usage_schema()).combine_chunks()
    if len(pc.unique(table["company_id"])) != table.num_rows:
        read_landed_usage(data_dir, day)  # names the duplicate and both pages
        raise UsagePageError(
            f"usage for {day.isoformat()}: a company_id appears twice; refusing to double count"
        )
    _check_row_count(data_dir, day, manifest, table.num_rows)
    return manifest, table


def _landed_pages(
    data_dir: Path, day: dt.date, parse: Callable[..., PageT] = parse_usage_page
) -> tuple[dict[str, Any], Iterator[PageT]]:
    """The manifest of a complete landing and its pages, each checked against its checksum and parsed
    (by ``parse``: as rows, or as columns)."""
    directory = landing.day_dir(data_dir, USAGE, day)
    manifest = landing.read_manifest(directory)
    if manifest is None:
        raise ProductApiError(f"no complete landing of product usage for {day.isoformat()} in {directory}")

    def pages() -> Iterator[PageT]:
        for meta in manifest["pages"]:
            path = directory / meta["file"]
            raw = path.read_bytes()
            if files.sha256_bytes(raw) != meta["sha256"]:
                raise LandingIntegrityError(
                    f"{path}: checksum differs from the manifest; the landing was modified"
                )
            yield parse(raw, day, int(meta["page"]), path)

    return manifest, pages()


def _check_row_count(data_dir: Path, day: dt.date, manifest: dict[str, Any], count: int) -> None:
    if count != manifest["row_count"]:
        raise LandingIntegrityError(
            f"{landing.day_dir(data_dir, USAGE, day)}: the pages hold {count} rows but the manifest says "
            f"{manifest['row_count']}"
        )
