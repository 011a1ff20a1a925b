"""The one exception tree of formation.

    FormationError
    ├── InputError                 bad user input (recipe, config, cells, rules): CLI exit code 2
    │   ├── RecipeError
    │   ├── ConfigError
    │   ├── CellsFileError
    │   ├── RulesError
    │   ├── PlanError              an ageing plan (stages, checkpoints, K window) that cannot run
    │   └── SchemaError            a database at a schema revision this code cannot work in (`formation db upgrade`)
    ├── InstrumentError            anything between the host and an instrument (context as attributes)
    │   ├── TransportError
    │   │   ├── InstrumentTimeout        no reply in time (the session resynchronises)
    │   │   └── InstrumentDisconnected   the link is gone (the session reconnects)
    │   ├── ScpiError                    the instrument reported an error (code, message, command)
    │   └── InstrumentProtocolError      a reply that cannot be parsed (garbage values, bad block)
    ├── SafetyTrip                 a host-side safety check stopped a channel
    ├── StateError                 an illegal state transition (a bug, raised loudly)
    └── StoreError                 the database refused or is unreachable

pyvisa and socket exceptions are translated into this tree in exactly one place:
``formation.instruments.scpi`` (``raise ... from exc``).
"""

from __future__ import annotations


class FormationError(Exception):
    """Base of every error formation raises on purpose."""


class InputError(FormationError):
    """Bad user input, refused before anything starts; ``field`` names where, ``reason`` says why."""

    def __init__(self, field: str, reason: str, *, source: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.source = source
        #: Every problem found, (field, reason), when a validator collects more than the first.
        self.errors: list[tuple[str, str]] = [(field, reason)]
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {reason}" if field else f"{where}{reason}")


class RecipeError(InputError):
    """A recipe that cannot run: unknown key, missing end, limit violated, unparseable value."""


class ConfigError(InputError):
    """A site configuration that cannot be used."""


class CellsFileError(InputError):
    """A cells file (cell_id, lot, nominal_capacity_ah) that cannot be used."""


class RulesError(InputError):
    """A grading rules file that cannot be used."""


class PlanError(InputError):
    """An ageing plan that cannot run: unknown key, a checkpoint outside its stage, a duration out of bounds."""


class SchemaError(InputError):
    """A database whose schema revision this formation cannot work in: behind (upgrade it), newer, or unknown."""

    def __init__(self, reason: str) -> None:
        super().__init__("", reason)


class InstrumentError(FormationError):
    """An error between the host and one instrument."""

    def __init__(
        self,
        message: str,
        *,
        resource: str | None = None,
        command: str | None = None,
        cabinet: str | None = None,
    ) -> None:
        self.resource = resource
        self.command = command
        self.cabinet = cabinet
        parts = [message]
        if cabinet:
            parts.append(f"cabinet={cabinet}")
        if resource:
            parts.append(f"resource={resource}")
        if command:
            parts.append(f"command={command!r}")
        super().__init__(" ".join(parts))


class TransportError(InstrumentError):
    """The transport failed (timeout or disconnect)."""


class InstrumentTimeout(TransportError):
    """No complete reply within the timeout."""


class InstrumentDisconnected(TransportError):
    """The connection is closed or could not be opened."""


class ScpiError(InstrumentError):
    """The instrument reported an error in its error queue."""

    def __init__(self, code: int, message: str, command: str | None = None, **context: str | None) -> None:
        self.code = code
        self.scpi_message = message
        super().__init__(f'{code},"{message}"', command=command, **context)


class InstrumentProtocolError(InstrumentError):
    """A reply that does not parse: garbage values, a malformed block, a wrong count."""


class SafetyTrip(FormationError):
    """A host-side safety check stopped a channel."""

    def __init__(self, reason: str, *, cabinet: str | None = None, channel: int | None = None) -> None:
        self.reason = reason
        self.cabinet = cabinet
        self.channel = channel
        super().__init__(f"{cabinet or '?'}/{channel if channel is not None else '?'}: {reason}")


class StateError(FormationError):
    """An illegal state transition."""


class StoreError(FormationError):
    """The database refused a write or cannot be reached."""
