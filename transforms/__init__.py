"""Record -> record functions: small, pure, no I/O.

`compile_plan` turns a message type and a subscription's options (view, rename, drop) into a
`RecordPlan` whose `apply` normalizes one MLink wire body into the Kafka key and the value the
Avro encoder takes. See `transforms.plan` for what a normalized record promises.
"""

from transforms.plan import (
    INFERRED_KINDS,
    NormalizedRecord,
    OutputField,
    RecordPlan,
    TransformError,
    TransformOptions,
    compile_plan,
    infer_kind,
)
from transforms.record_key import compile_key
from transforms.timestamps import DateTimeParser

__all__ = [
    "INFERRED_KINDS",
    "DateTimeParser",
    "NormalizedRecord",
    "OutputField",
    "RecordPlan",
    "TransformError",
    "TransformOptions",
    "compile_key",
    "compile_plan",
    "infer_kind",
]
