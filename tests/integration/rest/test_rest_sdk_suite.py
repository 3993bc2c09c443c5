"""singer-sdk's standard tap suite on tap-dativo-rest, with the issue's example config
(bearer auth, cursor pagination, replication key, inferred schema) plus a declared-schema
stream paginated by Link header. The test server starts at import time (module level)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from singer_sdk.testing import get_tap_test_class

from tap_dativo_rest.tap import TapDativoRest

from .server import BEARER_TOKEN, ORDERS_SCHEMA, shared_server

pytestmark = pytest.mark.integration

SERVER = shared_server()

ISSUE_CONFIG: dict[str, Any] = {
    "api_url": SERVER.url,
    "auth": {"type": "bearer", "token": BEARER_TOKEN},
    "streams": [
        {
            "name": "orders",
            "path": "/v1/orders",
            "records_path": "$.data[*]",
            "primary_keys": ["id"],
            "replication_key": "updated_at",
            "bookmark_param": "updated_since",
            "pagination": {"type": "cursor", "next_path": "$.next_cursor", "param": "cursor"},
        },
        {
            "name": "orders_declared",
            "path": "/link",
            "records_path": "$[*]",
            "primary_keys": ["id"],
            "schema": ORDERS_SCHEMA,
            "pagination": {"type": "link"},
        },
    ],
}

TestTapDativoRest = get_tap_test_class(TapDativoRest, config=ISSUE_CONFIG)


def test_catalog_carries_the_inferred_and_declared_schemas() -> None:
    tap = TapDativoRest(config=ISSUE_CONFIG, parse_env_config=False)
    catalog = tap.catalog_dict
    streams = {s["tap_stream_id"]: s for s in catalog["streams"]}
    inferred = streams["orders"]["schema"]["properties"]
    assert inferred["id"] == {"type": "integer"}
    assert inferred["updated_at"] == {"type": ["string", "null"], "format": "date-time"}
    assert inferred["amount"] == {"type": ["number", "null"]}
    assert streams["orders"]["replication_key"] == "updated_at"
    declared = streams["orders_declared"]["schema"]["properties"]
    assert declared["customer"]["properties"]["vip"] == {"type": ["boolean", "null"]}
    assert BEARER_TOKEN not in json.dumps(catalog)
