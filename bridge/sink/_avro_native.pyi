# Types of the C extension built from _avro_native.c (see bridge.sink.avro).
from typing import Any

KIND_DOUBLE: int
KIND_LONG: int
KIND_STRING: int
KIND_BOOLEAN: int
KIND_RECORD: int
KIND_ARRAY: int
KIND_NULLABLE: int
KIND_DATETIME: int

def encode(program: tuple[Any, ...], value: Any, prefix: bytes, /) -> bytes | None: ...
def check(program: tuple[Any, ...], /) -> None: ...
