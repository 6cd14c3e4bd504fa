"""The runtime checkpoint, as the Go connector stores it: base64 of the protobuf `consumer.Checkpoint`.

Flow sends the checkpoint as proto3 JSON; `flow_checkpoints_v1.checkpoint` holds its binary
protobuf encoding in padded standard base64. The message is described here at run time with
descriptor_pb2 (no generated code), and `json_format` converts between the two forms, so a
materialization can switch between this connector and the Go one and resume where it was.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    name: str, number: int, ftype: int, *, label: int = _F.LABEL_OPTIONAL, type_name: str = "", json_name: str = ""
) -> descriptor_pb2.FieldDescriptorProto:
    f = descriptor_pb2.FieldDescriptorProto(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if json_name:
        f.json_name = json_name
    return f


def _map_entry(name: str, value_type: int, value_type_name: str = "") -> descriptor_pb2.DescriptorProto:
    entry = descriptor_pb2.DescriptorProto(name=name)
    entry.options.map_entry = True
    entry.field.append(_field("key", 1, _F.TYPE_STRING))
    entry.field.append(_field("value", 2, value_type, type_name=value_type_name))
    return entry


def _build() -> Any:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="materialize_postgres/consumer.proto", package="consumer", syntax="proto3"
    )
    ckpt = fdp.message_type.add(name="Checkpoint")

    producer_state = ckpt.nested_type.add(name="ProducerState")
    producer_state.field.append(_field("last_ack", 1, _F.TYPE_FIXED64, json_name="lastAck"))
    producer_state.field.append(_field("begin", 2, _F.TYPE_INT64))

    source = ckpt.nested_type.add(name="Source")
    entry = source.nested_type.add(name="ProducerEntry")
    entry.field.append(_field("id", 1, _F.TYPE_BYTES))
    entry.field.append(_field("state", 2, _F.TYPE_MESSAGE, type_name=".consumer.Checkpoint.ProducerState"))
    source.field.append(_field("read_through", 1, _F.TYPE_INT64, json_name="readThrough"))
    source.field.append(
        _field(
            "producers",
            2,
            _F.TYPE_MESSAGE,
            label=_F.LABEL_REPEATED,
            type_name=".consumer.Checkpoint.Source.ProducerEntry",
        )
    )

    ckpt.nested_type.append(_map_entry("SourcesEntry", _F.TYPE_MESSAGE, ".consumer.Checkpoint.Source"))
    ckpt.nested_type.append(_map_entry("AckIntentsEntry", _F.TYPE_BYTES))
    ckpt.field.append(
        _field("sources", 1, _F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, type_name=".consumer.Checkpoint.SourcesEntry")
    )
    ckpt.field.append(
        _field(
            "ack_intents",
            2,
            _F.TYPE_MESSAGE,
            label=_F.LABEL_REPEATED,
            type_name=".consumer.Checkpoint.AckIntentsEntry",
            json_name="ackIntents",
        )
    )

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("consumer.Checkpoint"))


Checkpoint = _build()


class CheckpointError(ValueError):
    pass


def json_to_stored(checkpoint_json: bytes | str | None) -> str:
    """Runtime checkpoint JSON -> base64 protobuf text for the checkpoints table."""
    msg = Checkpoint()
    if checkpoint_json:
        try:
            json_format.Parse(checkpoint_json, msg, ignore_unknown_fields=True)
        except json_format.ParseError as err:
            raise CheckpointError(f"startCommit.runtimeCheckpoint is not a valid checkpoint: {err}") from None
    return base64.b64encode(msg.SerializeToString(deterministic=True)).decode()


def stored_to_json(stored: str | bytes) -> bytes:
    """base64 protobuf text from the checkpoints table -> proto3 JSON for `opened.runtimeCheckpoint`."""
    try:
        raw = base64.b64decode(stored, validate=True)
        msg = Checkpoint.FromString(raw)
    except (binascii.Error, ValueError, Exception) as err:  # protobuf raises its own DecodeError
        raise CheckpointError(f"the stored checkpoint cannot be decoded: {err}") from None
    as_dict = json_format.MessageToDict(msg, preserving_proto_field_name=False)
    return json.dumps(as_dict, separators=(",", ":"), sort_keys=True).encode()
