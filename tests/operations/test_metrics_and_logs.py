"""What an operator's Prometheus and log store see of a deployment run the production way (the
API under gunicorn with two processes, a worker pool of its own): /metrics parsed with
Prometheus's parser, adding up every process; JSON log lines that one id ties together."""

import json
import re
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.faults.conftest import deployment  # noqa: F401  (a fixture)
from tests.http_servers import free_port
from tests.import_.conftest import ImageServer, import_body

METRICS_TOKEN = "scrape-secret-for-tests"
IMAGE = b"\0" * 3 * 1024 * 1024 + b"not a real disk, but raw is anything" * 1000


@pytest.fixture
def image_server():
    with ImageServer().serving() as server:
        yield server


@pytest.fixture
def served(deployment):  # noqa: F811
    service = deployment(
        {"IMAGEACTIONS_METRICS_TOKEN": METRICS_TOKEN, "IMAGEACTIONS_URL_ALLOWED_NETWORKS": "127.0.0.0/8"}
    )
    service.start_api()
    service.start_workers(workers=2)
    return service


def scrape(service, url=None) -> dict:
    """{(name, labels as a sorted tuple): value} of one scrape."""
    url = url or f"{service.base_url}/metrics"
    response = requests.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(service, action_id: str, timeout=60) -> dict:
    deadline = time.monotonic() + timeout
    while (body := service.action(action_id))["status"] not in ("success", "failure", "cancelled"):
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.2)
    return body


def log_lines(service) -> list[dict]:
    """Every line the deployment's processes wrote; each must be a JSON object."""
    lines = []
    for path in sorted(service.directory.glob("*.log")):
        for number, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                line = json.loads(text)
            except ValueError:
                raise AssertionError(f"{path.name}:{number} is not a JSON line: {text!r}") from None
            assert isinstance(line, dict) and {"time", "level", "logger", "message"} <= line.keys(), text
            lines.append({**line, "file": path.name})
    return lines


def documented_metrics() -> tuple[dict[str, set[str]], list[tuple[str, set[str]]]]:
    """docs/deploy.md's monitoring section: {metric: its labels} from the tables, and each
    (metric, labels) an example (scrape configuration, alert rule) selects on."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text[re.search(r"^## \d+\. Monitoring", text, re.MULTILINE).start() :]
    tables = {}
    for name, labels in re.findall(r"^\| `(imageactions_\w+)` \|([^|]*)\|", section, re.MULTILINE):
        tables[name] = set(re.findall(r"`(\w+)`", labels))
    selected = []
    for block in re.findall(r"```yaml\n(.*?)```", section, re.DOTALL):
        for name, selector in re.findall(r"(imageactions_\w+)(?:\{([^}]*)\})?", block):
            selected.append((name, set(re.findall(r"(\w+)\s*[=!]~?", selector or ""))))
    return tables, selected


def assert_documented_as_scraped(samples: dict) -> None:
    labels_of: dict[str, set[str]] = {}
    for name, labels in samples:
        labels_of.setdefault(name, set()).update(key for key, _ in labels if key != "le")
    tables, selected = documented_metrics()
    assert len(tables) == 13 and selected
    for name, labels in tables.items():
        scraped = [labels_of[n] for n in (name, f"{name}_count") if n in labels_of]
        assert scraped, f"{name} is documented but not scraped"
        assert scraped[0] == labels, f"{name}: documented labels {labels}, scraped {scraped[0]}"
    for name, labels in selected:
        family = name.removesuffix("_bucket")
        assert family in tables, f"the example uses {name}, which the tables do not document"
        assert labels <= tables[family], f"the example selects {name} on {labels - tables[family]}"


def test_metrics_add_up_every_api_and_worker_process_and_parse_as_prometheus_text(served, image_server):
    # Pending until its data comes (never here); its webhook goes to a server that answers POSTs 501.
    response = served.http.post(
        f"{served.base_url}/v2/image-actions",
        json={"action_type": "test", "input": {"await_data": True}, "notify_url": image_server.url("/hook")},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    waiting = response.json()["id"]
    succeeded = [served.create_test_action() for _ in range(3)]
    failed = served.create_test_action(work={"kind": "fail"})
    response = served.http.post(
        f"{served.base_url}/v2/image-actions",
        json=import_body({"location": image_server.add("disk.img", IMAGE)}),
        timeout=30,
    )
    assert response.status_code == 201, response.text
    imported = wait_for(served, response.json()["id"])
    assert imported["status"] == "success", imported
    for action_id in succeeded:
        assert wait_for(served, action_id)["status"] == "success"
    assert wait_for(served, failed)["status"] == "failure"
    image_id = imported["result"]["image_ref"]
    download = served.http.get(f"{served.base_url}/v2/images/{image_id}/file", timeout=30)
    assert download.status_code == 200 and download.content == IMAGE

    deliveries = f"{served.base_url}/v2/image-actions/{waiting}/deliveries"
    deadline = time.monotonic() + 30
    while not served.http.get(deliveries, timeout=30).json()[0]["attempts"]:
        assert time.monotonic() < deadline, served.log_tail()
        time.sleep(0.2)

    # gunicorn's two processes answer scrapes in turn: every answer must be the same sum.
    scrapes = [scrape(served) for _ in range(6)]
    for samples in scrapes:
        assert value(samples, "imageactions_actions_created_total", action_type="test") == 5
        assert value(samples, "imageactions_actions_pending", action_type="test", status="waiting") == 1
        assert value(samples, "imageactions_actions_created_total", action_type="import") == 1
        ended = "imageactions_actions_ended_total"
        assert value(samples, ended, action_type="test", status="success", error_code="") == 3
        assert value(samples, ended, action_type="test", status="failure", error_code="step_failed") == 1
        assert value(samples, ended, action_type="import", status="success", error_code="") == 1
        steps = "imageactions_step_duration_seconds_count"
        assert value(samples, steps, action_type="test", step="prepare", outcome="success") == 4
        assert value(samples, steps, action_type="test", step="work", outcome="failure") == 1
        assert value(samples, steps, action_type="import", step="fetch", outcome="success") == 1
        assert value(samples, "imageactions_bytes_total", direction="received") == len(IMAGE)
        assert value(samples, "imageactions_bytes_total", direction="stored") == len(IMAGE)
        assert value(samples, "imageactions_bytes_total", direction="served") == len(IMAGE)
        http = "imageactions_http_request_duration_seconds_count"
        assert value(samples, http, method="POST", route="/v2/image-actions", status="201") == 6
        assert value(samples, http, method="GET", route="/v2/images/{pk}/file", status="200") == 1
        assert value(samples, "imageactions_live_state_up", source="database") == 1
        assert value(samples, "imageactions_live_state_up", source="broker") == 1
        assert value(samples, "imageactions_live_clusters", pool="default") == 1
        assert value(samples, "imageactions_live_workers", pool="default") == 2
        assert value(samples, "imageactions_queue_depth", pool="default") == 0
        assert value(samples, "imageactions_queue_oldest_age_seconds", pool="default") == 0
        assert value(samples, "imageactions_stale_runs") == 0
        assert value(samples, "imageactions_webhook_deliveries_total", outcome="failed") == 1
    assert served.action(waiting)["status"] == "waiting"
    assert_documented_as_scraped(scrapes[-1])
    # Each scrape is itself a request, counted by whichever process answered it.
    gets = [value(s, http, method="GET", route="/metrics", status="200") for s in scrapes]
    assert gets == sorted(gets) and gets[-1] >= 5


def test_scrapes_take_any_accept_header_and_odd_methods_share_one_label(served):
    for accept in ("text/plain;version=0.0.4", "application/openmetrics-text;version=1.0.0", "text/plain"):
        response = requests.get(
            f"{served.base_url}/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}", "Accept": accept},
            timeout=30,
        )
        assert response.status_code == 200, (accept, response.text[:200])
        assert response.headers["Content-Type"].startswith(accept.split(";")[0])
    for method in ("FOOBAR", "QWERTY"):
        requests.request(method, f"{served.base_url}/healthz", timeout=30)
    samples = scrape(served)
    methods = {dict(labels)["method"] for name, labels in samples if name.endswith("request_duration_seconds_count")}
    assert "other" in methods and not methods & {"FOOBAR", "QWERTY"}


def test_metrics_need_the_scrape_token_or_an_operator(served):
    anonymous = requests.get(f"{served.base_url}/metrics", timeout=30)
    assert anonymous.status_code == 401
    wrong = requests.get(f"{served.base_url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    odd = requests.get(f"{served.base_url}/metrics", headers={"Authorization": "Bearer caf\u00e9".encode()}, timeout=30)
    assert odd.status_code == 401
    member = served.http.get(f"{served.base_url}/metrics", timeout=30)  # alice: a member, not an admin
    assert member.status_code == 403 and "metrics" in member.json()["detail"]


def test_queued_work_shows_in_the_queue_gauges_while_no_worker_takes_it(deployment):  # noqa: F811
    service = deployment({"IMAGEACTIONS_METRICS_TOKEN": METRICS_TOKEN})
    service.start_api()
    action_id = service.create_test_action()
    time.sleep(1.5)
    samples = scrape(service)
    assert value(samples, "imageactions_queue_depth", pool="default") == 1
    assert value(samples, "imageactions_queue_oldest_age_seconds", pool="default") >= 1
    assert value(samples, "imageactions_live_workers", pool="default") == 0
    assert value(samples, "imageactions_actions_pending", action_type="test", status="waiting") == 1
    service.start_workers(workers=1)
    assert wait_for(service, action_id)["status"] == "success"


def test_one_request_id_finds_the_whole_story_of_an_action_across_processes(served):
    response = served.http.post(
        f"{served.base_url}/v2/image-actions",
        json={"action_type": "test", "input": {"work": {"kind": "flaky", "failures": 1}}},
        headers={"X-Request-Id": "ci-build-4711"},
        timeout=30,
    )
    assert response.status_code == 201 and response.headers["X-Request-Id"] == "ci-build-4711"
    action_id = response.json()["id"]
    assert wait_for(served, action_id)["status"] == "success"
    made_up = served.http.get(f"{served.base_url}/v2/image-actions/{action_id}", timeout=30)
    assert made_up.headers["X-Request-Id"].startswith("req-")  # none given: one is made
    bad = served.http.get(f"{served.base_url}/healthz", headers={"X-Request-Id": "a b;c<script>"}, timeout=30)
    assert bad.headers["X-Request-Id"].startswith("req-")  # not a sane id: replaced

    time.sleep(0.5)  # the last lines may still be on their way to the files
    lines = log_lines(served)
    story = [line for line in lines if line.get("request_id") == "ci-build-4711"]
    files = {line["file"] for line in story}
    assert "api.log" in files and any(name.startswith("worker") for name in files), story
    [request_line] = [line for line in story if line["logger"] == "imageactions.requests"]
    assert request_line["status"] == 201 and request_line["route"] == "/v2/image-actions"
    work = [line["message"] for line in story if line.get("step") == "work" and "attempt" in line]
    assert work == [  # the retry is in the story too
        "work step started (attempt 1)",
        "work step ended: retry",
        "work step started (attempt 2)",
        "work step ended: success",
    ]
    for line in story:
        if line["file"].startswith("worker"):
            assert line["action_id"] == action_id and line["worker"].endswith(f":{line['process']}"), line
    assert any(line["message"] == "action ended: success" for line in story)
    # gunicorn's own lines are JSON too, and its access log is off (the API's request lines replace it).
    assert any(line["logger"] == "gunicorn.error" for line in lines)
    assert not any(line["logger"] == "gunicorn.access" for line in lines)


def test_a_host_without_the_api_serves_its_workers_metrics_with_serve_metrics(served):
    action_id = served.create_test_action()
    assert wait_for(served, action_id)["status"] == "success"
    port = free_port()
    served._spawn("metrics", [sys.executable, str(ROOT / "manage.py"), "serve_metrics", "--bind", f"127.0.0.1:{port}"])
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 30
    while True:
        try:
            refused = requests.get(url, timeout=5)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, served.log_tail()
            time.sleep(0.2)
    assert refused.status_code == 401
    samples = scrape(served, url)
    steps = "imageactions_step_duration_seconds_count"
    assert value(samples, steps, action_type="test", step="work", outcome="success") == 1
    assert not any(name.startswith("imageactions_live_") for name, _ in samples)  # the API's gauges


def test_a_metrics_file_another_process_is_creating_does_not_fail_the_scrape(served):
    # prometheus_client creates a process's file empty, then sizes it: a scrape in between
    # used to read the empty file and answer 500.
    being_created = served.data_dir / "metrics" / "counter_4242.db"
    being_created.touch()
    samples = scrape(served)
    assert any(name.startswith("imageactions_") for name, _labels in samples)
