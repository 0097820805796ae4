"""The state store written once over SQL; ``sqlite.py`` and ``postgres.py`` plug in a driver.

A backend subclasses ``SqlStateStore``, names its statements (``schema.Statements``) and
supplies four primitives: run a batch of statements, fetch the rows for one key, and
encode/decode a time the way its columns hold it. The rest (checking and reducing a batch,
the arguments of each statement, turning rows into JSON) is here, once. The public methods
are documented on ``StateStore``.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self

from consumers.state import store
from consumers.state.schema import Statements
from consumers.state.writes import (
    CountryWrite,
    DeviceRow,
    MessageStatusWrite,
    ReachabilityWrite,
    RoamingWrite,
    Version,
    Write,
    check,
    reduce_writes,
)

Rows = list[tuple[Any, ...]]
"""Argument tuples of one single-row statement, in the order ``Statements`` binds them."""
_NO_VERSION = (None, None, None, None, None)
_E164_WITHOUT_PLUS = re.compile(r"[1-9][0-9]{4,14}")


class Row(Protocol):
    """A fetched row, read by column name (``sqlite3.Row``, ``asyncpg.Record``)."""

    def __getitem__(self, column: str, /) -> Any: ...


class SqlStateStore(store.StateStore):
    """``StateStore`` on a SQL database; a subclass supplies the driver primitives."""

    _statements: ClassVar[Statements]

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

    def _version(self, version: Version | None) -> tuple[Any, ...]:
        if version is None:
            return _NO_VERSION
        tier, time, rank, source, event_id = version
        return (tier, self._encode_time(time), rank, source, event_id)

    def _device_row(self, row: DeviceRow) -> tuple[Any, ...]:
        roaming, country, reachability = row.roaming, row.country, row.reachability
        return (
            row.device,
            None if roaming is None else roaming.roaming,
            *self._version(None if roaming is None else roaming.version),
            None if country is None else country.country_code,
            None if country is None else store.country_name_to_json(country.country_name),
            *self._version(None if country is None else country.version),
            None if reachability is None else reachability.reachability,
            *self._version(None if reachability is None else reachability.version),
        )

    async def apply_writes(self, writes: Iterable[Write]) -> None:
        writes = list(writes)
        for write in writes:
            check(write)
        reduced = reduce_writes(writes)
        time = self._encode_time
        batch: list[tuple[str, Rows]] = [
            ("devices", [self._device_row(row) for row in reduced.devices]),
            (
                "subscriptions",
                [
                    (
                        w.subscription_id,
                        w.api,
                        w.status,
                        w.termination_reason,
                        *self._version(w.version),
                    )
                    for w in reduced.subscriptions
                ],
            ),
            (
                "message_statuses",
                [
                    (w.message_id, w.status, w.notification_type, *self._version(w.version))
                    for w in reduced.message_statuses
                ],
            ),
            (
                "inbound_messages",
                [
                    (
                        w.message_id,
                        w.source_number,
                        w.destination_number,
                        w.message,
                        None if w.received_time is None else time(w.received_time),
                        w.version.source,
                        w.version.event_id,
                    )
                    for w in reduced.inbound
                ],
            ),
        ]
        batch = [(name, rows) for name, rows in batch if rows]
        if batch:
            await self._write_batch(batch)

    async def _rekeyed(self) -> Self:
        """This store once ``rekey_phone_numbers`` has run (every ``open`` ends with it);
        closed when that fails."""
        try:
            await self.rekey_phone_numbers()
        except BaseException:
            await self.close()
            raise
        return self

    async def rekey_phone_numbers(self) -> int:
        """Move devices an earlier version keyed by a phone number without its ``+`` (sent as
        a JSON number) to the E.164 key, merging each field group by its version. Returns
        how many moved; run at every open (an index range scan), so an interrupted move is
        finished by the next one."""
        rows = await self._fetch(self._statements.select_digit_devices, "1")
        moved = [row for row in rows if _E164_WITHOUT_PLUS.fullmatch(row["device"])]
        if not moved:
            return 0
        writes: list[Write] = []
        for row in moved:
            key = "+" + row["device"]
            if row["roaming_event_id"] is not None and row["roaming"] is not None:
                version = self._stored_version(row, "roaming_")
                writes.append(RoamingWrite(key, bool(row["roaming"]), version))
            if row["country_event_id"] is not None:
                names = store.country_name_from_json(row["country_name"])
                writes.append(
                    CountryWrite(
                        key,
                        row["country_code"],
                        None if names is None else tuple(names),
                        self._stored_version(row, "country_"),
                    )
                )
            if row["reachability_event_id"] is not None:
                version = self._stored_version(row, "reachability_")
                writes.append(ReachabilityWrite(key, row["reachability"], version))
        await self.apply_writes(writes)
        await self._write_batch([("delete_device", [(row["device"],) for row in moved])])
        return len(moved)

    def _stored_version(self, row: Row, prefix: str) -> Version:
        return Version(
            row[f"{prefix}tier"],
            self._decode_time(row[f"{prefix}time"]),
            row[f"{prefix}rank"],
            row[f"{prefix}source"],
            row[f"{prefix}event_id"],
        )

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
                MessageStatusWrite(
                    message_id,
                    row["notification_type"],
                    row["status"],
                    Version(
                        row["tier"],
                        self._decode_time(row["status_time"]),
                        row["rank"],
                        row["source"],
                        row["event_id"],
                    ),
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
