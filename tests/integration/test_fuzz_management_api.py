"""The management API fuzzed from its own OpenAPI schema: no input gives a 5xx, every answer is the envelope.

Schemathesis generates requests for every operation of `/openapi.json` under `/api/v1` (bounded and
derandomized, so a run is the same every time), sent with a real org's API key to a real server.
Schemathesis is used for its request strategies only: its pytest plugin does not follow pytest 9.
"""

import orjson
import schemathesis
from hypothesis import HealthCheck, given, settings

from harness import Server

EXAMPLES = 20


async def test_no_request_to_the_management_api_gives_a_server_error(server: Server) -> None:
    org = await server.new_org(deposit_cents=1000)  # with money: deposits, keys and reports act on it
    # The Stripe webhook is not configured on this server (it answers 503 by design); test_stripe.py
    # sends it every kind of bad delivery with a configured secret.
    schema = (schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
              .include(path_regex="^/api/v1/").exclude(path="/api/v1/billing/webhooks/stripe"))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10  # the whole management API, not a schema that failed to load
    seen: dict[str, set[int]] = {}

    for operation in operations:
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(base_url=server.base_url, headers={"Authorization": f"Bearer {org.key}"},
                                 timeout=30)
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            assert response.status_code < 500, (case.operation.label, response.text[:500])
            content_type = str(response.headers.get("content-type"))
            if response.status_code < 300 and case.operation.path.endswith(".csv"):
                assert "text/csv" in content_type
                return
            assert "application/json" in content_type, (case.operation.label, response.status_code,
                                                         response.text[:300])
            body = orjson.loads(response.content)
            assert isinstance(body, dict) and isinstance(body.get("success"), bool), response.text[:500]
            if body["success"] is False:
                assert response.status_code >= 400
                assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)

        fuzz()
    assert set(seen) == {operation.label for operation in operations}
