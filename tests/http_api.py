"""API Gateway HTTP API events for the app's Lambda entry point (tests/infra); no pytest import, so a process
that runs the handler imports only what the app does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ACCOUNT = "123456789012"  # moto's default account id (tests/aws_support.py)


def http_api_event(
    method: str,
    path: str,
    *,
    host: str,
    headers: Mapping[str, str] | None = None,
    cookies: Sequence[str] = (),
    body: str | None = None,
    source_ip: str = "203.0.113.7",
) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0, as the stage `$default` sends it to its Lambda
    integration (the shape app.aws's mangum reads): lower-case headers, cookies apart, the client's address
    in requestContext.http.sourceIp."""
    path, _, query = path.partition("?")
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "cookies": list(cookies),
        "headers": {
            "host": host,
            "user-agent": "test-browser",
            "x-forwarded-proto": "https",
            "x-forwarded-for": source_ip,
            **{k.lower(): v for k, v in (headers or {}).items()},
        },
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": host.split(".")[0],
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": "test-browser",
            },
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "05/Dec/2026:11:00:00 +0000",
            "timeEpoch": 1796468400000,
        },
        "body": body,
        "isBase64Encoded": False,
    }
