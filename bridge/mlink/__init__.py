"""The MLink protocol without I/O: framing, messages, keys, the session, the catalog."""
