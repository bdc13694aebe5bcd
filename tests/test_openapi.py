"""The OpenAPI document against the live server: schemathesis generates
requests for every operation (valid and invalid) and fails on any 5xx, any
status, content type or body the document does not declare."""

import pytest
import requests
import schemathesis
from helpers import ServiceProcess, cli
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from orchestrator.api.openapi import openapi_document

schema = schemathesis.openapi.from_dict(openapi_document())

FLOWS = '''
from orchestrator import Flow, Parameter, task
from orchestrator.schedules import IntervalSchedule
import datetime

@task
def echo(day, n):
    return (day, n)

with Flow("report", schedule=IntervalSchedule(interval=datetime.timedelta(hours=1))) as report:
    echo(Parameter("day", default="2024-05-01"), Parameter("n", default=1))

with Flow("plain") as plain:
    echo("x", 1)
'''

SEMANTIC = ("/api/flows", "/api/flow_runs")


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    """`orchestrator server` on a free port, over a home with flows, runs,
    logs, a limit and a secret, so generated requests meet real data."""
    home = tmp_path_factory.mktemp("openapi-home")
    (home / "flows_under_test.py").write_text(FLOWS)
    cli(home, "project", "create", "p")
    cli(home, "register", "-p", "p", home / "flows_under_test.py")
    cli(home, "run", "p/plain")
    cli(home, "execute", "1")
    cli(home, "run", "p/report")
    cli(home, "concurrency", "set", "label", "2")
    with ServiceProcess("server", home=home, log_dir=home) as process:
        process.wait_for_banner()
        process.health()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {process.token}"
        yield process.url, session
    output = process.stdout + process.stderr
    assert "Traceback" not in output, output


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_document(case, live_api):
    url, session = live_api
    excluded = []
    if case.operation.method.upper() == "POST" and case.operation.path in SEMANTIC:
        # Valid JSON can still name parameters the flow lacks, or a file that
        # defines no flow: a 400 the document cannot predict.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=url, session=session, timeout=30,
                           excluded_checks=excluded)


def test_the_document_is_served_and_names_every_operation(live_api):
    url, session = live_api
    served = session.get(url + "/api/openapi.json", timeout=10).json()
    assert served == openapi_document()
    operations = [op for path in served["paths"].values() for op in path.values()]
    assert len(operations) >= 20
    assert all(op.get("operationId") for op in operations)
