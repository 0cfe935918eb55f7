"""One exception root for the whole bridge.

Every error says whether retrying the same operation can help (`retryable`), so that
callers decide between "back off and try again" and "stop with a clear message"
without string matching.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""

    retryable: bool = False


class ConfigError(BridgeError):
    """The configuration is invalid; nothing will work until it is changed."""


class ProtocolError(BridgeError):
    """The peer sent something that breaks the MLink protocol."""


class FramingError(ProtocolError):
    """A websocket payload could not be split into MLink messages."""


class TruncatedFrame(FramingError):
    """A framed message announces more bytes than the payload holds."""


class OversizedFrame(FramingError):
    """A payload or framed message is larger than the configured cap."""


class GarbledFrame(FramingError):
    """A framed-message header is not `\\r\\n` + J|P + 5 digits + 6 digits."""


class MessageError(ProtocolError):
    """A single message is unreadable: bad JSON, NaN, no header, no type."""


class KeyFormatError(ProtocolError):
    """A primary key (JSON object or canonical string) is malformed."""


class AuthError(BridgeError):
    """MLink refused the credentials. Retrying helps only after a long back-off."""

    retryable = True


class ConnectionLost(BridgeError):
    """The websocket closed or stopped answering; reconnecting can help."""

    retryable = True
