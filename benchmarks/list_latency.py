"""List-page latency of one owner's pending actions (GET /v2/image-actions?status=pending) with
1k and with 1M rows in PostgreSQL, through a live gunicorn (one sync worker, requests one at a
time); the target is a 1M/1k ratio of at most 1.5x. Also EXPLAINs the view's own query.

Usage: python benchmarks/list_latency.py [REQUESTS]   (default 200 per page and size)
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import Stack, api_session, median, percentile, report_row

OWNER = "bench"
PENDING_ROWS = 300  # the measured owner's pending actions: six pages of 50
TARGET_RATIO = 1.5

# One row per generate_series value; %(...)s are filled in per batch. Times go back one second a row.
INSERT_ROWS = """
INSERT INTO imageactions_imageaction (
    id, action_type, status, owner, input, image_properties, result, message,
    progress_step, progress_done, progress_total, step_index, step_state, attempt, restarts,
    worker, cancel_requested, state, created_at, updated_at, started_at, finished_at, expires_at)
SELECT gen_random_uuid(), 'import', {status}, {owner}, '{{"location": "http://example.org/x.raw"}}',
       '{{}}', '{{}}', '', '', 0, NULL, 0, {step_state}, 1, 0, '', false, '{{}}',
       now() - (i * interval '1 second') - interval '1 minute', now() - (i * interval '1 second'),
       NULL, NULL, NULL
FROM generate_series({first}, {last}) AS i
"""


def insert(stack: Stack, first: int, last: int, *, owner_sql: str, pending_every: int):
    """Rows `first..last`: every `pending_every`-th one pending ('uploading'), the rest `success`."""
    status = f"CASE WHEN i % {pending_every} = 0 THEN 'uploading' ELSE 'success' END"
    step_state = f"CASE WHEN i % {pending_every} = 0 THEN 'running' ELSE 'done' END"
    stack.psql(INSERT_ROWS.format(status=status, owner=owner_sql, step_state=step_state, first=first, last=last))


def fill(stack: Stack, total: int):
    """The measured owner's 300 pending actions among its terminal ones, then other owners' rows
    (1% pending) up to `total`; the measured owner's rows are spread over the whole time range."""
    existing = int(stack.psql("SELECT count(*) FROM imageactions_imageaction"))
    if existing == 0:
        # 300 pending + 200 terminal of the measured owner, interleaved in time.
        stack.psql(
            INSERT_ROWS.format(
                status="CASE WHEN i % 5 < 3 THEN 'uploading' ELSE 'success' END",
                owner=f"'{OWNER}'",
                step_state="CASE WHEN i % 5 < 3 THEN 'running' ELSE 'done' END",
                first=1,
                last=500,
            )
        )
        existing = 500
    if total > existing and total >= 100_000:
        # 20k more terminal actions of the measured owner, so its index range is not tiny.
        insert(stack, 1_000_001, 1_020_000, owner_sql=f"'{OWNER}'", pending_every=10**9)
        existing += 20_000
    if total > existing:
        insert(stack, 2_000_001, 2_000_000 + total - existing, owner_sql="'owner-' || (i % 2000)", pending_every=100)
    stack.psql("VACUUM ANALYZE imageactions_imageaction")


def measure(session, api: str, requests_count: int) -> dict:
    first_url = f"{api}/v2/image-actions?status=pending"
    pages, url = [], first_url
    while url:  # walk to the last page: the deep cursor
        pages.append(url)
        body = session.get(url, timeout=30).json()
        url = body.get("next")
    pending_seen = (len(pages) - 1) * 50 + len(body["results"])
    figures = {"pages": len(pages), "pending_listed": pending_seen}
    for label, page_url in (("first_page", first_url), ("deep_page", pages[-1])):
        for _ in range(20):  # warm caches and the connection
            session.get(page_url, timeout=30)
        times = []
        for _ in range(requests_count):
            start = time.perf_counter()
            response = session.get(page_url, timeout=30)
            times.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise SystemExit(f"{page_url} answered {response.status_code}: {response.text[:300]}")
        figures[label] = {"p50_ms": round(median(times) * 1000, 2), "p99_ms": round(percentile(times, 0.99) * 1000, 2)}
    figures["deep_page_url"] = pages[-1].replace(api, "")
    return figures


def explain(stack: Stack, token: str, path: str) -> dict:
    """EXPLAIN ANALYZE the SELECT the list view really ran for `path` (captured from Django)."""
    out = stack.manage("shell", "-c", EXPLAIN_CODE.format(token=token, path=path))
    return json.loads(out.splitlines()[-1])


EXPLAIN_CODE = """
import json
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
with CaptureQueriesContext(connection) as captured:
    response = Client().get({path!r}, HTTP_AUTHORIZATION="Token {token}")
assert response.status_code == 200, response.content
sql = [q["sql"] for q in captured.captured_queries if 'FROM "imageactions_imageaction"' in q["sql"]][-1]
with connection.cursor() as cursor:
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
    plan = "\\n".join(row[0] for row in cursor.fetchall())
print(json.dumps({{"sql": sql, "plan": plan, "uses_partial_index": "action_owner_pending_idx" in plan}}))
"""


def main():
    requests_count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    results = {}
    with Stack("imageactions_list") as stack:
        token = stack.create_user("bench-user", OWNER)
        # One sync gunicorn worker: requests are served one at a time, nothing else is loaded.
        api = stack.start_api(workers=1, threads=1)
        session = api_session(token)
        for size in (1_000, 1_000_000):
            started = time.perf_counter()
            fill(stack, size)
            fill_s = round(time.perf_counter() - started, 1)
            figures = measure(session, api, requests_count)
            figures["rows"] = int(stack.psql("SELECT count(*) FROM imageactions_imageaction"))
            figures["fill_s"] = fill_s
            for label, path in (
                ("first_page", "/v2/image-actions?status=pending"),
                ("deep_page", figures["deep_page_url"]),
            ):
                plan = explain(stack, token, path)
                figures[label]["uses_partial_index"] = plan["uses_partial_index"]
                figures[label]["plan"] = plan["plan"]
            results[size] = figures

    small, large = results[1_000], results[1_000_000]
    print("measured through: live gunicorn, 1 sync worker, sequential requests on a kept-alive session")
    for figures in results.values():
        print(
            f"\n== {figures['rows']} rows (filled in {figures['fill_s']} s); owner {OWNER!r} has "
            f"{figures['pending_listed']} pending actions over {figures['pages']} pages"
        )
        for label in ("first_page", "deep_page"):
            page = figures[label]
            print(
                f"  {label}: p50 {page['p50_ms']} ms  p99 {page['p99_ms']} ms  "
                f"partial index used: {page['uses_partial_index']}"
            )
        print("  plan (deep page):\n    " + figures["deep_page"]["plan"].replace("\n", "\n    "))
    ratios = {label: round(large[label]["p50_ms"] / small[label]["p50_ms"], 3) for label in ("first_page", "deep_page")}
    print(
        f"\np50 ratio 1M/1k: first page {ratios['first_page']}x, deep page {ratios['deep_page']}x "
        f"(target <= {TARGET_RATIO}x)"
    )
    print(
        json.dumps(
            {
                "ratios": ratios,
                **{
                    str(k): {
                        page: {m: v[page][m] for m in ("p50_ms", "p99_ms", "uses_partial_index")}
                        for page in ("first_page", "deep_page")
                    }
                    for k, v in results.items()
                },
            }
        )
    )
    for label, ratio in ratios.items():
        page = label.replace("_", " ")
        report_row(
            f"list of pending actions, {page}, 1M rows",
            baseline=f"1k rows p50 {small[label]['p50_ms']} ms",
            ours=f"p50 {large[label]['p50_ms']} ms",
            ratio=ratio,
            target=f"<= {TARGET_RATIO}",
        )
    if max(ratios.values()) > TARGET_RATIO:
        raise SystemExit("the list latency ratio exceeds the target")


if __name__ == "__main__":
    main()
