"""The JSON API answers what its OpenAPI document says (issue: hardening, part 6).

The document listed 200/422 while the API answers 400 and 404, and TRACE got a 405
without `Allow`. schemathesis (from PyPI) generates requests from /api/v1/openapi.json
and checks every answer against it, on the app serving a database filled by the demo;
bounded here, PATCHCI_API_EXAMPLES for more.
"""

from __future__ import annotations

import os
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings

from patchci.web.app import create_app
from tests.web_server import client_for, demo_dir, settings_for

__all__ = ["demo_dir"]
EXAMPLES = int(os.environ.get("PATCHCI_API_EXAMPLES", "15"))


def test_api_answers_what_its_schema_says(demo_dir: Path) -> None:
    app = create_app(settings_for(demo_dir))
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 4
    for op in operations:

        @given(op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate()

        run()


def test_the_schema_lists_400_and_404_not_422(demo_dir: Path) -> None:
    doc = client_for(create_app(settings_for(demo_dir))).get("/api/v1/openapi.json").json()
    detail = doc["paths"]["/api/v1/series/{series_id}"]["get"]["responses"]
    assert {"200", "400", "404"} <= set(detail) and "422" not in detail


def test_a_method_not_allowed_says_what_is_allowed(demo_dir: Path) -> None:
    client = client_for(create_app(settings_for(demo_dir)))
    for path in ("/api/v1/series", "/series"):
        r = client.request("TRACE", path)
        assert r.status_code == 405
        assert "GET" in r.headers.get("allow", ""), (path, dict(r.headers))
