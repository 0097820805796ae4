"""docs/openapi.yaml and docs/asyncapi.yaml are valid and stay true to the code.

Validity: openapi-spec-validator for OpenAPI 3.1; the official AsyncAPI 3.0.0 JSON schema
(vendored in docs/schemas/) for AsyncAPI. Truth: the documented paths are the app's routes,
every status the ingress code answers is documented, real answers match the documented
schemas, the queues' routing keys are gateway/topology.py's, every type the adapters produce
is a documented message, and the repository's real callbacks, once normalised, match their
message's payload and header schemas. Schemathesis fuzzes a running ingress from the OpenAPI
file (``not_a_server_error`` and the response-conformance checks).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT7, DRAFT202012

from gateway.adapters import ADAPTERS, Context, camara, notify_delivery_status, notify_inbound_sms
from gateway.amqp_message import ce_headers
from gateway.app import create_app
from gateway.auth import hash_token
from gateway.cloudevent import rfc3339
from gateway.publisher import Publisher
from gateway.rejected import rejected_record
from gateway.settings import DEFAULT_SOURCES, AmqpSettings, Settings, load_settings
from gateway.topology import BUILTIN_BINDINGS, Names, retry_queue_name
from tests.broker import AMQP_URL, delete_everything, unique_prefix
from tests.conftest import FIXTURES, fixture_content_type, fixture_source
from tests.processes import wait_ready
from tests.tcp_proxy import free_port

Doc = dict[str, Any]

ROOT = Path(__file__).resolve().parents[1]
OPENAPI = ROOT / "docs" / "openapi.yaml"
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
ASYNCAPI_SCHEMA = ROOT / "docs" / "schemas" / "asyncapi-3.0.0.json"
TOKEN = "contract-token"
# The contract's table (§2, §7, §8): every status a callback may be answered with.
CONTRACT_STATUSES = {204, 400, 401, 403, 404, 413, 415, 429, 503}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Notify sends these values of notification_type; each becomes notify.<type>.delivery-status.
NOTIFY_NOTIFICATION_TYPES = ("sms", "email", "letter")


@cache
def openapi() -> Doc:
    doc: Doc = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    return doc


@cache
def asyncapi() -> Doc:
    doc: Doc = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    return doc


def default_settings(prefix: str = "events", amqp_url: str = AMQP_URL) -> Settings:
    """The settings of a deployment without [[sources]]: the three default sources, each
    opened by TOKEN."""
    env = {variable: hash_token(TOKEN) for _, _, variable in DEFAULT_SOURCES}
    settings = load_settings(None, env)
    amqp = replace(
        settings.amqp, url=amqp_url, urls=(amqp_url,), exchange=prefix, publish_timeout_s=2.0
    )
    return replace(settings, amqp=amqp)


def schema_validator(document: Doc, pointer: str, draft: Any) -> jsonschema.protocols.Validator:
    """A validator for the schema at ``pointer`` inside ``document`` (its $refs resolved)."""
    uri = "urn:contract-doc"
    registry: Registry[Any] = Registry().with_resource(uri, draft.create_resource(document))
    schema = {"$ref": f"{uri}#{pointer}"}
    cls = jsonschema.Draft202012Validator if draft is DRAFT202012 else jsonschema.Draft7Validator
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def local_refs(node: Any) -> Iterator[str]:
    """Every local ``$ref`` in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from local_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from local_refs(item)


def resolve(document: Doc, ref: str) -> Any:
    """Follow a ``#/a/b`` reference (JSON pointer escapes included)."""
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def topic_matches(pattern: str, key: str) -> bool:
    """RabbitMQ topic matching: ``*`` one word, ``#`` zero or more."""
    words, keys = pattern.split("."), key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(words):
            return j == len(keys)
        if words[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(keys) + 1))
        return j < len(keys) and words[i] in ("*", keys[j]) and match(i + 1, j + 1)

    return match(0, 0)


# --- validity -------------------------------------------------------------------------------


def test_openapi_is_valid_openapi_3_1() -> None:
    """docs/openapi.yaml is an OpenAPI 3.1 document that openapi-spec-validator accepts."""
    assert openapi()["openapi"].startswith("3.1.")
    validate_openapi(openapi())


def test_openapi_validator_rejects_a_broken_document() -> None:
    """The validator really checks: a response without a description is refused."""
    broken = copy.deepcopy(openapi())
    del broken["paths"]["/healthz"]["get"]["responses"]["200"]["description"]
    with pytest.raises(Exception, match="description"):
        validate_openapi(broken)


@cache
def asyncapi_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def test_asyncapi_matches_the_official_asyncapi_3_0_schema() -> None:
    """docs/asyncapi.yaml validates against the AsyncAPI 3.0.0 JSON schema."""
    assert asyncapi()["asyncapi"] == "3.0.0"
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message[:200]}"
        for error in asyncapi_validator().iter_errors(asyncapi())
    ]
    assert not errors, errors


@pytest.mark.parametrize(
    "breakage",
    ["operation action", "channel field", "amqp exchange type"],
)
def test_asyncapi_schema_check_rejects_broken_documents(breakage: str) -> None:
    """The vendored schema really checks (no silent pass offline): three misspellings fail."""
    broken = copy.deepcopy(asyncapi())
    if breakage == "operation action":
        broken["operations"]["publishEvent"]["action"] = "publish"  # AsyncAPI 2 wording
    elif breakage == "channel field":
        broken["channels"]["events"]["adress"] = "events"
    else:
        broken["channels"]["events"]["bindings"]["amqp"]["exchange"]["type"] = "topical"
    assert not asyncapi_validator().is_valid(broken)


@pytest.mark.parametrize("name", ["openapi", "asyncapi"])
def test_every_reference_resolves(name: str) -> None:
    """Every local $ref of both documents points at something."""
    document = openapi() if name == "openapi" else asyncapi()
    refs = set(local_refs(document))
    assert refs
    for ref in refs:
        resolve(document, ref)


# --- OpenAPI against the app ------------------------------------------------------------------


def documented_operations() -> set[tuple[str, str]]:
    """(METHOD, path) of every documented operation."""
    return {
        (method.upper(), path)
        for path, item in openapi()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_documented_paths_are_the_app_routes() -> None:
    """The app's routes (default sources) and the documented operations are the same set."""
    settings = default_settings()
    app = create_app(settings, publisher=Publisher(settings.amqp))
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    per_source = {f"/callbacks/{source.name}" for source in settings.sources}
    # OPTIONS on a source's own path is served by the /callbacks/{source} route.
    expected = routes | {("OPTIONS", path) for path in per_source}
    assert documented_operations() == expected


def test_every_callback_operation_documents_every_status() -> None:
    """Each POST documents the contract's statuses, and each error is problem+json."""
    for path, item in openapi()["paths"].items():
        if "post" not in item:
            continue
        responses = item["post"]["responses"]
        assert {int(status) for status in responses} >= CONTRACT_STATUSES, path
        for status, response in responses.items():
            response = resolve(openapi(), response["$ref"]) if "$ref" in response else response
            if int(status) >= 400:
                schema = response["content"]["application/problem+json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (path, status)
        retry_after = {"429", "503"}
        for status in retry_after:
            response = resolve(openapi(), responses[status]["$ref"])
            assert "Retry-After" in response["headers"], (path, status)
        assert "WWW-Authenticate" in resolve(openapi(), responses["401"]["$ref"])["headers"]


def statuses_in_code() -> set[int]:
    """Every HTTP status the ingress code answers a callback with, read from its source."""
    patterns = (
        r"problem_response\(\s*(\d{3})",
        r"^\s+status(?::\s*int)?\s*=\s*(\d{3})\b",
        r"_reject\(\s*request,\s*source,\s*(\d{3})",
        r"^NO_CONTENT\s*=\s*(\d{3})",
    )
    found: set[int] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            found.update(int(status) for status in re.findall(pattern, text, re.MULTILINE))
    return found


def test_every_status_the_code_answers_is_documented() -> None:
    """Statuses found in the ingress code (bugs' 500 aside) are all in the OpenAPI file."""
    found = statuses_in_code()
    assert {204, 400, 401, 404, 413, 415, 503} <= found, "the scan no longer finds the code"
    documented = {
        int(status)
        for item in openapi()["paths"].values()
        for method, operation in item.items()
        if method in HTTP_METHODS
        for status in operation["responses"]
    }
    assert found - {500} <= documented, sorted(found - {500} - documented)


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> AsyncIterator[Client]:
    """The ingress with the default sources in front of the real broker."""
    prefix = unique_prefix()
    settings = default_settings(prefix)
    publisher = Publisher(settings.amqp)
    publisher.start()
    await asyncio.wait_for(publisher.wait_ready(), 15)
    try:
        yield await aiohttp_client(create_app(settings, publisher=publisher))
    finally:
        await publisher.close()
        await delete_everything(prefix)


@pytest.fixture
async def unreachable_client(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> Client:
    """The ingress with the default sources and a broker address nothing listens on."""
    settings = default_settings(unique_prefix(), f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    settings = replace(settings, amqp=replace(settings.amqp, publish_timeout_s=0.5))
    return await aiohttp_client(create_app(settings))


def documented_response(path: str, method: str, status: int) -> Doc:
    """The documented response object (reference followed)."""
    responses = openapi()["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}"
    response: Doc = responses[str(status)]
    return resolve(openapi(), response["$ref"]) if "$ref" in response else response


def check_answer(path: str, method: str, status: int, headers: Any, body: bytes) -> None:
    """The answer's status, content type, headers and body are as documented."""
    response = documented_response(path, method, status)
    for name in response.get("headers", {}):
        assert name in headers, f"{status} without its documented {name} header"
    content = response.get("content")
    if not content:
        assert not body, f"{status} has a body the document does not describe"
        return
    media_type = headers["Content-Type"].split(";")[0]
    assert media_type in content, f"{status}: {media_type} not documented"
    if media_type.endswith("json"):
        schema = content[media_type]["schema"]
        pointer = schema["$ref"][1:]
        schema_validator(openapi(), pointer, DRAFT202012).validate(json.loads(body))


async def test_callback_answers_match_the_document(client: Client) -> None:
    """204, 400, 401, 404, 413 and 415 answers match the documented responses."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    camara_event = (FIXTURES / "camara-roaming-status.json").read_bytes()
    cases = [
        ("/callbacks/camara", camara_event, "application/cloudevents+json", auth, 204),
        ("/callbacks/camara", b"{not json", "application/json", auth, 400),
        ("/callbacks/camara", camara_event, "application/cloudevents+json", {}, 401),
        ("/callbacks/nowhere", camara_event, "application/json", auth, 404),
        ("/callbacks/notify-status", b"<xml/>", "application/xml", auth, 415),
        ("/callbacks/notify-inbound", b"x" * 300_000, "application/json", auth, 413),
    ]
    for path, body, content_type, headers, status in cases:
        response = await client.post(
            path, data=body, headers={"Content-Type": content_type, **headers}
        )
        answer = await response.read()
        assert response.status == status, (path, answer)
        documented_path = path if path in openapi()["paths"] else "/callbacks/{source}"
        check_answer(documented_path, "post", status, response.headers, answer)


async def test_broker_trouble_answers_match_the_document(unreachable_client: Client) -> None:
    """With no broker, a callback's 503 and /readyz's 503 match the document."""
    response = await unreachable_client.post(
        "/callbacks/notify-inbound",
        data=(FIXTURES / "notify-inbound-sms.json").read_bytes(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status == 503
    check_answer("/callbacks/notify-inbound", "post", 503, response.headers, await response.read())
    response = await unreachable_client.get("/readyz")
    assert response.status == 503
    check_answer("/readyz", "get", 503, response.headers, await response.read())


async def test_operations_answers_match_the_document(client: Client) -> None:
    """/healthz, /readyz, /metrics and the OPTIONS handshake answer as documented."""
    for path in ("/healthz", "/readyz", "/metrics"):
        response = await client.get(path)
        assert response.status == 200, path
        check_answer(path, "get", 200, response.headers, await response.read())
    response = await client.options(
        "/callbacks/camara", headers={"WebHook-Request-Origin": "eventemitter.example.com"}
    )
    assert response.status == 200
    check_answer("/callbacks/camara", "options", 200, response.headers, await response.read())
    response = await client.options("/callbacks/nowhere")
    assert response.status == 404
    check_answer("/callbacks/{source}", "options", 404, response.headers, await response.read())


# --- AsyncAPI against the topology and the adapters -------------------------------------------


def documented_types() -> set[str]:
    return set(asyncapi()["components"]["messages"]) - {"rejectedRequest", "deadLetter"}


def channel_message_types(channel: Doc) -> set[str]:
    return {resolve(asyncapi(), ref["$ref"])["name"] for ref in channel["messages"].values()}


def test_every_event_message_is_its_type() -> None:
    """Each event message is keyed and named by its CloudEvent type, which its payload fixes."""
    messages = asyncapi()["components"]["messages"]
    for event_type in documented_types():
        message = messages[event_type]
        assert message["name"] == event_type
        assert message["bindings"]["amqp"]["messageType"] == event_type
        fixed = [part for part in message["payload"]["allOf"] if "properties" in part]
        assert fixed[0]["properties"]["type"] == {"const": event_type}


def test_builtin_queues_match_the_topology() -> None:
    """Each built-in queue's channel has gateway/topology.py's routing keys, and lists exactly
    the documented event types those keys route to it."""
    names = Names.for_prefix(AmqpSettings().exchange)
    channels = asyncapi()["channels"]
    for short, patterns in BUILTIN_BINDINGS.items():
        channel = channels[short]
        assert channel["address"] == names.queue(short)
        assert channel["bindings"]["amqp"]["queue"]["name"] == names.queue(short)
        assert tuple(channel["x-routing-keys"]) == patterns, short
        routed = {t for t in documented_types() if any(topic_matches(p, t) for p in patterns)}
        assert channel_message_types(channel) == routed, short
    assert channels["events"]["address"] == names.exchange
    assert channels["unrouted"]["address"] == names.unrouted
    assert channels["rejected"]["address"] == names.rejected
    assert channel_message_types(channels["events"]) == documented_types()
    assert channel_message_types(channels["unrouted"]) == documented_types()


def test_documented_retry_queue_names_are_the_topology_ones() -> None:
    """Each built-in queue's description names its retry queues as gateway/topology.py
    does: ``<queue>.retry.<delay>.ttl<ttl>``, plain ``<queue>.retry.<delay>`` without jitter."""
    names = Names.for_prefix(AmqpSettings().exchange)
    for short in BUILTIN_BINDINGS:
        queue = names.queue(short)
        description = asyncapi()["channels"][short]["description"]
        jittered, plain = re.findall(rf"`({re.escape(queue)}\.retry\.[^`]*)`", description)
        assert jittered.replace("<delay>", "5s").replace("<ttl>", "5500ms") == (
            retry_queue_name(queue, 5.0, jitter=0.1)
        )
        assert plain.replace("<delay>", "5s") == retry_queue_name(queue, 5.0, jitter=0.0)


def produced_types() -> set[str]:
    """Every type the adapters can produce from a known shape, and every fixture's type."""
    types = set(camara.LEGACY_TYPES.values())
    for by_status in camara.DEVICE_STATUS_TYPES.values():
        types.update(by_status.values())
    types.update(f"notify.{kind}.delivery-status" for kind in NOTIFY_NOTIFICATION_TYPES)
    types.update(
        {
            notify_delivery_status.COMPLAINT,
            notify_delivery_status.RETURNED_LETTER,
            notify_inbound_sms.TYPE,
        }
    )
    types.update(event["type"] for _, event in normalized_fixtures())
    return types


def test_every_produced_type_is_documented() -> None:
    """The adapters' types (legacy tables, Notify kinds) and the fixtures' types all have a
    message in docs/asyncapi.yaml."""
    missing = produced_types() - documented_types()
    assert not missing, sorted(missing)


@cache
def normalized_fixtures() -> list[tuple[str, dict[str, Any]]]:
    """(fixture name, event) for every real callback in tests/fixtures, through its adapter."""
    settings = default_settings()
    adapters = {source.name: ADAPTERS[source.adapter] for source in settings.sources}
    received = rfc3339(datetime.now(UTC))
    events = []
    for path in sorted(FIXTURES.glob("*.json")):
        source = fixture_source(path)
        headers = {
            "Content-Type": fixture_content_type(path),
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        }
        for event in adapters[source](headers, path.read_bytes(), Context(source, received)):
            events.append((path.stem, event))
    return events


@pytest.mark.parametrize("index", range(len(normalized_fixtures())))
def test_normalized_fixture_matches_its_message(index: int) -> None:
    """A real callback, once normalised, validates against its type's payload schema, and its
    AMQP headers against the header schema."""
    name, event = normalized_fixtures()[index]
    event_type = event["type"]
    assert event_type in documented_types(), f"{name}: {event_type} is not documented"
    pointer = f"/components/messages/{event_type}"
    schema_validator(asyncapi(), f"{pointer}/payload", DRAFT7).validate(event)
    schema_validator(asyncapi(), f"{pointer}/headers", DRAFT7).validate(ce_headers(event))


def test_payload_schemas_reject_a_wrong_event() -> None:
    """The payload check is real: another type, or a missing gatewaysource, fails."""
    _, event = normalized_fixtures()[0]
    validator = schema_validator(
        asyncapi(), f"/components/messages/{event['type']}/payload", DRAFT7
    )
    assert validator.is_valid(event)
    assert not validator.is_valid({**event, "type": event["type"] + ".x"})
    assert not validator.is_valid({k: v for k, v in event.items() if k != "gatewaysource"})


def test_rejected_record_matches_its_message() -> None:
    """The record kept on .rejected (text body, binary body, no body) matches its schema."""
    validator = schema_validator(asyncapi(), "/components/schemas/RejectedRequest", DRAFT7)
    for body in (b'{"id": 1}', b"\xff\xfe", None):
        record = rejected_record(
            source="camara",
            status=400,
            reason="no id",
            received=rfc3339(datetime.now(UTC)),
            headers=[("Content-Type", "application/json"), ("Authorization", "Bearer x")],
            body=body,
        )
        validator.validate(json.loads(record))


# --- Schemathesis against a running ingress ---------------------------------------------------


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    """Schemathesis, driven by docs/openapi.yaml with a valid token, gets no 5xx from a real
    `event-gateway serve`, and every answer conforms to the document."""
    prefix, port = unique_prefix(), free_port()
    digest = hash_token(TOKEN)
    sources = "".join(
        f'[[sources]]\nname = "{name}"\nadapter = "{adapter}"\ntokens = ["{digest}"]\n'
        for name, adapter, _ in DEFAULT_SOURCES
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[amqp]\nurl = "{AMQP_URL}"\nexchange = "{prefix}"\n{sources}',
        encoding="utf-8",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--log-level", "error", "serve", "--config", config],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    schemathesis = Path(sys.executable).with_name("schemathesis")
    try:
        assert wait_ready(port, 20), "serve never became ready"
        result = subprocess.run(
            [
                str(schemathesis),
                "run",
                str(OPENAPI),
                "--url",
                f"http://127.0.0.1:{port}",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_headers_conformance,response_schema_conformance",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"),
                "--seed",
                os.environ.get("SCHEMATHESIS_SEED", "1"),
                "--generation-database",
                "none",
                "--workers",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert re.search(r"\d+ generated, \d+ passed", result.stdout), result.stdout[-2000:]
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        asyncio.run(delete_everything(prefix))
