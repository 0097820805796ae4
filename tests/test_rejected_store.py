"""Bounded stores (§7) on the real broker: ``.rejected`` keeps the newest records for a while,
``.unrouted`` refuses more once full and the ingress answers 503."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import ChannelPreconditionFailed

from gateway.settings import AmqpSettings
from gateway.topology import (
    Names,
    StoreArgumentsDiffer,
    declare_ingress,
    rejected_arguments,
    unrouted_arguments,
)
from tests.broker import AMQP_URL, message_count
from tests.conftest import IngressFactory
from tests.processes import EVENT_GATEWAY, clean_env

QUORUM_AND_CLASSIC = pytest.mark.parametrize("queue_type", ["quorum", "classic"])


def _event(index: int, event_type: str = "org.example.nobody-binds-this") -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"store-{index}",
            "source": "https://example.org",
            "type": event_type,
            "data": {"n": index},
        }
    )


@QUORUM_AND_CLASSIC
async def test_store_queues_carry_the_arguments_of_the_contract(
    make_ingress: IngressFactory, amqp: AbstractRobustConnection, prefix: str, queue_type: str
) -> None:
    """.rejected: length + TTL, drop the oldest; .unrouted: length, reject-publish."""
    ingress = await make_ingress(
        queue_type=queue_type, rejected_max_bytes=5000, rejected_ttl_s=60, unrouted_max_bytes=7000
    )
    names = Names.for_prefix(prefix)
    assert rejected_arguments(ingress.settings.amqp) == {
        "x-queue-type": queue_type,
        "x-max-length-bytes": 5000,
        "x-message-ttl": 60000,
        "x-overflow": "drop-head",
    }
    assert unrouted_arguments(ingress.settings.amqp) == {
        "x-queue-type": queue_type,
        "x-max-length-bytes": 7000,
        "x-overflow": "reject-publish",
    }
    # The broker accepts a redeclaration only with exactly the arguments the queue has.
    for name, arguments in (
        (names.rejected, rejected_arguments(ingress.settings.amqp)),
        (names.unrouted, unrouted_arguments(ingress.settings.amqp)),
    ):
        channel = await amqp.channel()
        await channel.declare_queue(name, durable=True, arguments=arguments)
        channel = await amqp.channel()
        with pytest.raises(ChannelPreconditionFailed):
            await channel.declare_queue(
                name, durable=True, arguments={**arguments, "x-max-length-bytes": 1}
            )


@QUORUM_AND_CLASSIC
async def test_a_full_unrouted_queue_makes_the_ingress_answer_503(
    make_ingress: IngressFactory, prefix: str, queue_type: str
) -> None:
    """Once .unrouted holds unrouted_max_bytes, the broker nacks and the sender gets 503."""
    ingress = await make_ingress(queue_type=queue_type, unrouted_max_bytes=600)
    capture = await ingress.channel.get_queue(ingress.capture, ensure=False)
    await capture.unbind(prefix, routing_key="#")  # let events fall through to .unrouted
    statuses = []
    for index in range(20):
        status, body = await ingress.post(
            "cloudevents", _event(index), "application/cloudevents+json"
        )
        statuses.append(status)
        if status == 503:
            assert b"could not be stored" in body
            break
    assert statuses[0] == 204
    assert statuses[-1] == 503, statuses
    count = await message_count(ingress.channel, Names.for_prefix(prefix).unrouted)
    assert count == statuses.count(204)
    # Routed events are unaffected: only the full store refuses.
    await capture.bind(prefix, routing_key="org.example.routed")
    status, _ = await ingress.post(
        "cloudevents", _event(99, "org.example.routed"), "application/cloudevents+json"
    )
    assert status == 204


@QUORUM_AND_CLASSIC
async def test_a_full_rejected_queue_drops_its_oldest_records(
    make_ingress: IngressFactory, prefix: str, queue_type: str
) -> None:
    """Past rejected_max_bytes the oldest records go; every 4xx is still kept and answered."""
    ingress = await make_ingress(queue_type=queue_type, rejected_max_bytes=3000)
    for index in range(12):
        status, _ = await ingress.post(
            "cloudevents", b'{"n": %d, "pad": "%s"}' % (index, b"x" * 200), "application/json"
        )
        assert status == 400  # kept (else 503), then answered
    names = Names.for_prefix(prefix)
    queue = await ingress.channel.declare_queue(names.rejected, passive=True)
    kept = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        kept.append(orjson.loads(orjson.loads(message.body)["body"])["n"])
    assert 0 < len(kept) < 12
    assert kept == list(range(12 - len(kept), 12))  # the newest, in order


async def test_rejected_records_expire_after_rejected_ttl_s(
    make_ingress: IngressFactory, prefix: str
) -> None:
    """A record older than rejected_ttl_s is gone (quorum queues honour message TTL on 3.10)."""
    ingress = await make_ingress(queue_type="quorum", rejected_ttl_s=1)
    status, _ = await ingress.post("cloudevents", b"{}", "application/json")
    assert status == 400
    rejected = Names.for_prefix(prefix).rejected
    assert await message_count(ingress.channel, rejected) == 1
    await asyncio.sleep(1.5)  # the TTL itself is under test: let it pass
    # A quorum queue drops expired messages when they are read (its count lags until then).
    queue = await ingress.channel.get_queue(rejected, ensure=False)
    assert await queue.get(no_ack=True, fail=False) is None


async def test_an_existing_store_with_other_arguments_is_a_clear_error(
    amqp: AbstractRobustConnection, prefix: str
) -> None:
    """A .rejected declared before its bounds existed: one error naming the queue and the fix."""
    channel = await amqp.channel()
    await channel.declare_queue(
        f"{prefix}.rejected", durable=True, arguments={"x-queue-type": "classic"}
    )
    settings = AmqpSettings(exchange=prefix, queue_type="classic")
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        with pytest.raises(StoreArgumentsDiffer) as raised:
            await declare_ingress(await connection.channel(), settings)
    assert f"'{prefix}.rejected'" in str(raised.value)
    assert "delete it" in str(raised.value)


async def test_topology_command_names_an_old_store_in_one_line(
    amqp: AbstractRobustConnection, prefix: str, tmp_path: Path
) -> None:
    """``event-gateway topology`` on an old .unrouted: exit 1 and one line saying what to do."""
    channel = await amqp.channel()
    await channel.declare_queue(
        f"{prefix}.unrouted", durable=True, arguments={"x-queue-type": "quorum"}
    )
    config = tmp_path / "gateway.toml"
    config.write_text(f'[amqp]\nurl = "{AMQP_URL}"\nexchange = "{prefix}"\n', encoding="utf-8")
    done = await asyncio.to_thread(
        subprocess.run,
        [EVENT_GATEWAY, "topology", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"'{prefix}.unrouted' exists with other arguments" in done.stderr


async def test_kept_records_carry_no_credential_header(
    make_ingress: IngressFactory, prefix: str
) -> None:
    """A 400 kept on .rejected: its headers hold no Authorization, token or signature value."""
    ingress = await make_ingress()
    status, _ = await ingress.post(
        "cloudevents",
        b"{}",
        "application/json",
        **{
            "X-Auth-Token": "tok-secret-1",
            "Webhook-Signature": "v1,sig-secret-2",
            "X-Api-Key": "key-secret-3",
            "Cookie": "session=cookie-secret-4",
            "X-Request-Id": "kept-5",
        },
    )
    assert status == 400
    queue = await ingress.channel.get_queue(Names.for_prefix(prefix).rejected, ensure=False)
    message = await queue.get(no_ack=True, fail=False)
    assert message is not None
    record = orjson.loads(message.body)
    kept = {name.lower(): value for name, value in record["headers"].items()}
    assert kept["x-request-id"] == "kept-5"
    assert b"secret" not in message.body
    assert not {"authorization", "x-auth-token", "cookie", "webhook-signature"} & kept.keys()
