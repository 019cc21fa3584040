"""API conformance: schemathesis generates requests from the app's own OpenAPI schema; every
response must be documented and match its schema, and every error must be problem+json."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fitcast.config import Settings
from server.app import create_app

_ROOT = Path(tempfile.mkdtemp(prefix="fitcast-schema-"))
# the rate limit well above what the schema-driven calls need (tests/test_security.py tests it)
app = create_app(Settings(root=_ROOT / "store", max_upload_bytes=1 << 20, rate_per_second=1e6, rate_burst=10**6),
                 start_workers=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_schema(case):
    # An upload body the schema allows ("binary") is still refused unless it is a real video:
    # that refusal is the point, so the "schema-valid data is accepted" check skips uploads.
    excluded = [positive_data_acceptance] if case.method.upper() == "POST" else []
    response = case.call_and_validate(excluded_checks=excluded)
    if response.status_code >= 400:
        ctype = response.headers["content-type"]
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        assert ctype.startswith("application/problem+json"), response.text
        if case.method.upper() != "HEAD":  # a HEAD answer has the headers only
            body = response.json()
            assert body["status"] == response.status_code and body["title"]
