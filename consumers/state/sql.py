"""The state store written once over SQL; ``sqlite.py`` and ``postgres.py`` plug in a driver.

A backend subclasses ``SqlStateStore``, names its statements (``schema.Statements``) and
supplies four primitives: run one write and tell whether it changed a row, fetch the rows
for one key, and encode/decode a time the way its columns hold it. The rest (the checks, the
arguments of each statement, turning rows into JSON) is here, once. The public methods are
documented on ``StateStore``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar, Protocol

from consumers.state import store
from consumers.state.schema import Statements
from consumers.state.writes import Write, check, reduce_writes

Rows = list[tuple[Any, ...]]
"""Argument tuples of one single-row statement, in the order ``Statements`` binds them."""


class Row(Protocol):
    """A fetched row, read by column name (``sqlite3.Row``, ``asyncpg.Record``)."""

    def __getitem__(self, column: str, /) -> Any: ...


class SqlStateStore(store.StateStore):
    """``StateStore`` on a SQL database; a subclass supplies the driver primitives."""

    _statements: ClassVar[Statements]

    @abstractmethod
    async def _write(self, statement: str, arguments: tuple[Any, ...]) -> bool:
        """Run one autocommitted write; whether it inserted or updated a row."""

    @abstractmethod
    async def _write_batch(self, batch: list[tuple[str, Rows]]) -> None:
        """Run each named statement (a ``Statements`` field) for each of its rows."""

    @abstractmethod
    async def _fetch(self, statement: str, key: str) -> Sequence[Row]:
        """The rows ``statement`` selects for ``key`` (bound to ``$1``)."""

    @abstractmethod
    def _encode_time(self, moment: datetime) -> Any:
        """``moment`` as a time column holds it; ValueError for a naive datetime."""

    @abstractmethod
    def _decode_time(self, value: Any) -> datetime:
        """Inverse of ``_encode_time``: an aware datetime in UTC."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection(s)."""

    def _optional_time(self, value: Any) -> datetime | None:
        return None if value is None else self._decode_time(value)

    async def _one(self, statement: str, key: str) -> Row | None:
        rows = await self._fetch(statement, key)
        return rows[0] if rows else None

    async def update_roaming(
        self,
        device: str,
        *,
        roaming: bool | None,
        country_code: int | None,
        country_name: list[str] | None,
        time: datetime,
        event_id: str,
    ) -> bool:
        return await self._write(
            self._statements.update_roaming,
            (
                device,
                roaming,
                country_code,
                store.country_name_to_json(country_name),
                self._encode_time(time),
                event_id,
            ),
        )

    async def update_reachability(
        self, device: str, *, reachability: str, time: datetime, event_id: str
    ) -> bool:
        store.check_reachability(reachability)
        return await self._write(
            self._statements.update_reachability,
            (device, reachability, self._encode_time(time), event_id),
        )

    async def update_subscription(
        self,
        subscription_id: str,
        *,
        api: str,
        status: str,
        termination_reason: str | None,
        time: datetime,
        event_id: str,
    ) -> bool:
        store.check_subscription_status(status)
        return await self._write(
            self._statements.update_subscription,
            (subscription_id, api, status, termination_reason, self._encode_time(time), event_id),
        )

    async def record_message_status(
        self, message_id: str, *, notification_type: str, status: str, time: datetime, event_id: str
    ) -> bool:
        return await self._write(
            self._statements.record_message_status,
            (message_id, status, notification_type, self._encode_time(time), event_id),
        )

    async def record_inbound_sms(
        self,
        message_id: str,
        *,
        source_number: str | None,
        destination_number: str | None,
        message: str | None,
        received_time: datetime | None,
        event_id: str,
    ) -> bool:
        received = None if received_time is None else self._encode_time(received_time)
        return await self._write(
            self._statements.record_inbound_sms,
            (message_id, source_number, destination_number, message, received, event_id),
        )

    async def apply_writes(self, writes: Iterable[Write]) -> None:
        writes = list(writes)
        for write in writes:
            check(write)
        reduced = reduce_writes(writes)
        time = self._encode_time
        batch: list[tuple[str, Rows]] = [
            (
                "update_roaming",
                [
                    (
                        w.device,
                        w.roaming,
                        w.country_code,
                        store.country_name_to_json(w.country_name),
                        time(w.time),
                        w.event_id,
                    )
                    for w in reduced.roaming
                ],
            ),
            (
                "update_reachability",
                [
                    (w.device, w.reachability, time(w.time), w.event_id)
                    for w in reduced.reachability
                ],
            ),
            (
                "update_subscription",
                [
                    (
                        w.subscription_id,
                        w.api,
                        w.status,
                        w.termination_reason,
                        time(w.time),
                        w.event_id,
                    )
                    for w in reduced.subscriptions
                ],
            ),
            (
                "record_message_status",
                [
                    (w.message_id, w.status, w.notification_type, time(w.time), w.event_id)
                    for w in reduced.message_statuses
                ],
            ),
            (
                "record_inbound_sms",
                [
                    (
                        w.message_id,
                        w.source_number,
                        w.destination_number,
                        w.message,
                        None if w.received_time is None else time(w.received_time),
                        w.event_id,
                    )
                    for w in reduced.inbound
                ],
            ),
        ]
        batch = [(name, rows) for name, rows in batch if rows]
        if batch:
            await self._write_batch(batch)

    async def device(self, key: str) -> dict[str, Any] | None:
        row = await self._one(self._statements.select_device, key)
        if row is None:
            return None
        return store.device_json(
            device=row["device"],
            # SQLite hands the boolean back as 0/1.
            roaming=None if row["roaming"] is None else bool(row["roaming"]),
            country_code=row["country_code"],
            country_name=store.country_name_from_json(row["country_name"]),
            roaming_time=self._optional_time(row["roaming_time"]),
            reachability=row["reachability"],
            reachability_time=self._optional_time(row["reachability_time"]),
        )

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        row = await self._one(self._statements.select_subscription, subscription_id)
        if row is None:
            return None
        return store.subscription_json(
            subscription_id=row["subscription_id"],
            api=row["api"],
            status=row["status"],
            termination_reason=row["termination_reason"],
            status_time=self._decode_time(row["status_time"]),
        )

    async def message(self, message_id: str) -> dict[str, Any] | None:
        rows = await self._fetch(self._statements.select_message, message_id)
        return store.message_json(
            message_id,
            (
                store.StatusEntry(
                    status=row["status"],
                    notification_type=row["notification_type"],
                    time=self._decode_time(row["status_time"]),
                    event_id=row["event_id"],
                )
                for row in rows
            ),
        )

    async def inbound(self, message_id: str) -> dict[str, Any] | None:
        row = await self._one(self._statements.select_inbound, message_id)
        if row is None:
            return None
        return store.inbound_json(
            message_id=row["message_id"],
            source_number=row["source_number"],
            destination_number=row["destination_number"],
            received_time=self._optional_time(row["received_time"]),
        )
