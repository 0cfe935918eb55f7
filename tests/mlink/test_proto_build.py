"""The bundled .proto sources and descriptor set are what tools/build_proto.py makes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "bridge" / "mlink" / "data"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_proto", ROOT / "tools" / "build_proto.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_proto_sources_are_what_the_builder_writes() -> None:
    builder = _builder()
    catalog = json.loads((DATA / "catalog.json").read_text())
    for name, text in builder.sources(catalog).items():
        assert (DATA / "proto" / name).read_text() == text, name


def test_shipped_descriptor_set_is_what_protoc_compiles(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) compiles the set")
    builder = _builder()
    out = tmp_path / "mlink.protoset"
    builder.compile_set(DATA / "proto", out)

    def ours(path: Path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
        files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
        return {f.name: f for f in files if not f.name.startswith("google/")}

    assert ours(out) == ours(DATA / "mlink.protoset")
    assert set(ours(out)) == {"spiderrock_common.proto", "mlink_admin.proto", "mlink_data.proto"}
