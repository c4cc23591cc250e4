"""The subset of Triton Inference Server's ``ModelConfig`` protobuf that tdfast writes.

Triton reads ``config.pbtxt`` as protobuf text format of ``inference.ModelConfig``
(``triton-inference-server/common``, ``protobuf/model_config.proto``). Rather
than vendoring that file or depending on ``tritonclient``, the messages tdfast
uses are declared here with the same names, field numbers and enum values, and
built at run time with ``google.protobuf`` (a dependency of ``onnx``). So our
writer and our tests go through a real text-format parser and serializer:
an unknown field or a wrong type is a parse error, exactly as in Triton.
"""
from __future__ import annotations

from functools import lru_cache

# name -> value, from model_config.proto's enum DataType.
DATA_TYPES = {"TYPE_INVALID": 0, "TYPE_BOOL": 1, "TYPE_UINT8": 2, "TYPE_UINT16": 3, "TYPE_UINT32": 4,
              "TYPE_UINT64": 5, "TYPE_INT8": 6, "TYPE_INT16": 7, "TYPE_INT32": 8, "TYPE_INT64": 9,
              "TYPE_FP16": 10, "TYPE_FP32": 11, "TYPE_FP64": 12, "TYPE_STRING": 13, "TYPE_BF16": 14}
INSTANCE_KINDS = {"KIND_AUTO": 0, "KIND_GPU": 1, "KIND_CPU": 2, "KIND_MODEL": 3}

# message -> [(field name, number, type, label, type name)]; numbers as in model_config.proto.
_S, _I32, _I64, _U64, _B, _E, _M = "string", "int32", "int64", "uint64", "bool", "enum", "message"
_MESSAGES = {
    "ModelInput": [("name", 1, _S, 1, None), ("data_type", 2, _E, 1, "DataType"),
                   ("dims", 4, _I64, 3, None), ("allow_ragged_batch", 7, _B, 1, None),
                   ("optional", 8, _B, 1, None)],
    "ModelOutput": [("name", 1, _S, 1, None), ("data_type", 2, _E, 1, "DataType"),
                    ("dims", 3, _I64, 3, None)],
    "ModelInstanceGroup": [("name", 1, _S, 1, None), ("count", 2, _I32, 1, None),
                           ("gpus", 3, _I32, 3, None), ("kind", 4, _E, 1, "ModelInstanceGroup.Kind")],
    "ModelDynamicBatching": [("preferred_batch_size", 1, _I32, 3, None),
                             ("max_queue_delay_microseconds", 2, _U64, 1, None),
                             ("preserve_ordering", 3, _B, 1, None)],
    "ModelConfig": [("name", 1, _S, 1, None), ("platform", 2, _S, 1, None),
                    ("max_batch_size", 4, _I32, 1, None), ("input", 5, _M, 3, "ModelInput"),
                    ("output", 6, _M, 3, "ModelOutput"),
                    ("instance_group", 7, _M, 3, "ModelInstanceGroup"),
                    ("default_model_filename", 8, _S, 1, None),
                    ("dynamic_batching", 11, _M, 1, "ModelDynamicBatching"),
                    ("parameters", 14, _M, 3, "ModelConfig.ParametersEntry"),
                    ("backend", 17, _S, 1, None)],
    "ModelParameter": [("string_value", 1, _S, 1, None)],
}
# map<string, ModelParameter> parameters = 14: protobuf spells a map as a nested entry message.
_MAP_ENTRIES = {"ModelConfig": ("ParametersEntry", "ModelParameter")}


@lru_cache(maxsize=1)
def model_config_class():
    """The ``inference.ModelConfig`` message class (subset), built once per process."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    types = {_S: f.TYPE_STRING, _I32: f.TYPE_INT32, _I64: f.TYPE_INT64, _U64: f.TYPE_UINT64,
             _B: f.TYPE_BOOL, _E: f.TYPE_ENUM, _M: f.TYPE_MESSAGE}
    fd = descriptor_pb2.FileDescriptorProto(name="tdfast/triton_model_config_subset.proto",
                                            package="inference", syntax="proto3")
    dt = fd.enum_type.add(name="DataType")
    for name, number in DATA_TYPES.items():
        dt.value.add(name=name, number=number)
    for msg_name, fields in _MESSAGES.items():
        msg = fd.message_type.add(name=msg_name)
        if msg_name == "ModelInstanceGroup":
            kind = msg.enum_type.add(name="Kind")
            for name, number in INSTANCE_KINDS.items():
                kind.value.add(name=name, number=number)
        if msg_name in _MAP_ENTRIES:
            entry_name, value_type = _MAP_ENTRIES[msg_name]
            entry = msg.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=1)
            entry.field.add(name="value", number=2, type=f.TYPE_MESSAGE, label=1,
                            type_name=f".inference.{value_type}")
        for name, number, typ, label, type_name in fields:
            field = msg.field.add(name=name, number=number, type=types[typ], label=label)
            if type_name:
                field.type_name = f".inference.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def parse_model_config(text: str):
    """Parse config.pbtxt text -> ModelConfig message; ``text_format.ParseError`` if invalid."""
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_class()())


def format_model_config(config) -> str:
    """ModelConfig message -> config.pbtxt text."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)
