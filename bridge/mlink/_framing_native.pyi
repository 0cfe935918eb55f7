# Types of the C extension built from _framing_native.c (see bridge.mlink.framing).
from typing import Any

def split(
    frame_type: type[tuple[Any, ...]], payload: bytes, max_message: int, /
) -> tuple[list[Any], int]: ...
