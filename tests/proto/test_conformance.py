"""Conformance of proto/modal_api.proto with Modal's official API descriptors.

protoc-c compiles our hand-written subset into a FileDescriptorSet, which is
compared with modal_proto.api_pb2.DESCRIPTOR from the modal Python package.
Every message, enum and RPC in our file must exist in Modal's API with the
same field names, numbers, types, labels, enum values and streaming flags.

Environment:
    PROTOC_C        protoc-c executable (default: protoc-c on PATH)
    MFMODAL_PROTO   .proto file to check (default: proto/modal_api.proto)
"""

import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    from modal_proto import api_pb2
except ImportError as exc:
    pytest.skip(
        f"modal_proto is not importable ({exc}); install the modal package "
        "(python/requirements-test.txt) to run the conformance test",
        allow_module_level=True,
    )

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    duration_pb2,
    empty_pb2,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROTO = REPO_ROOT / "proto" / "modal_api.proto"

# A field that is proto3 `optional` in Modal's API but plain in ours must
# carry a comment containing this phrase, which explains the lost presence.
OPTIONAL_MARKER = "optional in modal's api"

FieldType = descriptor_pb2.FieldDescriptorProto.Type
FieldLabel = descriptor_pb2.FieldDescriptorProto.Label

# Paths inside FileDescriptorProto and DescriptorProto, used to find the
# comments of a field in SourceCodeInfo.
FILE_MESSAGE_TYPE = 4
MESSAGE_FIELD = 2
MESSAGE_NESTED_TYPE = 3


class ProtoConformanceNote(UserWarning):
    """Accepted difference between our .proto and Modal's API."""


@dataclass
class Comparison:
    """Result of comparing our file with Modal's.

    Each entry of differences fails the test. optional_fields lists fields that
    are proto3 `optional` in Modal's API and plain in ours, and notes lists enum
    values that our file leaves out. Both are accepted.
    """

    differences: list[str] = field(default_factory=list)
    optional_fields: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Compiling with protoc-c


def find_protoc_c() -> str:
    configured = os.environ.get("PROTOC_C")
    if configured:
        path = shutil.which(configured)
        if path is None:
            pytest.fail(f"PROTOC_C={configured!r} is not an executable; fix or unset it")
        return path

    path = shutil.which("protoc-c")
    if path is None:
        pytest.skip("protoc-c not found on PATH (Debian package protobuf-c-compiler); set PROTOC_C")
    return path


def write_well_known_types(directory: Path) -> Path:
    """Write the well-known type descriptors from the Python runtime.

    protoc-c reads imports such as google/protobuf/any.proto from this set when
    they are not on its include path, so the test does not need the .proto
    files of the protobuf development package.
    """
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for module in (any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2, wrappers_pb2):
        module.DESCRIPTOR.CopyToProto(descriptor_set.file.add())

    path = directory / "well_known_types.pb"
    path.write_bytes(descriptor_set.SerializeToString())
    return path


def compile_proto(proto_file: Path, work_dir: Path) -> descriptor_pb2.FileDescriptorProto:
    """Compile proto_file with protoc-c and return its FileDescriptorProto with comments."""
    protoc_c = find_protoc_c()
    well_known_types = write_well_known_types(work_dir)
    output = work_dir / f"{proto_file.stem}.pb"
    command = [
        protoc_c,
        f"--proto_path={proto_file.parent}",
        f"--descriptor_set_in={well_known_types}",
        f"--descriptor_set_out={output}",
        "--include_imports",
        "--include_source_info",
        str(proto_file),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        pytest.fail(
            f"protoc-c failed with exit status {completed.returncode} on {proto_file}:\n"
            f"{completed.stderr}{completed.stdout}"
        )

    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(output.read_bytes())
    for file_proto in descriptor_set.file:
        if file_proto.name == proto_file.name:
            return file_proto
    pytest.fail(f"protoc-c output has no file named {proto_file.name}")


def modal_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file_proto = descriptor_pb2.FileDescriptorProto()
    api_pb2.DESCRIPTOR.CopyToProto(file_proto)
    return file_proto


# ---------------------------------------------------------------------------
# Indexing descriptors by full name


def index_messages(file_proto):
    """Map each message's full name (".pkg.Outer.Inner") to (descriptor, source path)."""
    messages = {}

    def walk(message_protos, scope, path):
        for index, message in enumerate(message_protos):
            full_name = f"{scope}.{message.name}"
            message_path = (*path, index)
            messages[full_name] = (message, message_path)
            walk(message.nested_type, full_name, (*message_path, MESSAGE_NESTED_TYPE))

    walk(file_proto.message_type, f".{file_proto.package}", (FILE_MESSAGE_TYPE,))
    return messages


def index_enums(file_proto, messages):
    """Map each enum's full name to its descriptor, including nested enums."""
    enums = {f".{file_proto.package}.{enum.name}": enum for enum in file_proto.enum_type}
    for message_name, (message, _path) in messages.items():
        for enum in message.enum_type:
            enums[f"{message_name}.{enum.name}"] = enum
    return enums


def index_comments(file_proto):
    """Map each source path to the text of all comments attached to it."""
    comments = {}
    for location in file_proto.source_code_info.location:
        text = " ".join(
            [location.leading_comments, location.trailing_comments, *location.leading_detached_comments]
        )
        comments[tuple(location.path)] = text
    return comments


def short_name(full_name: str, package: str) -> str:
    """Drop the leading dot and the package from a full name."""
    prefix = f".{package}."
    return full_name[len(prefix):] if full_name.startswith(prefix) else full_name.lstrip(".")


def type_text(field_proto) -> str:
    """Describe a field's type, with the full type name for messages and enums."""
    name = FieldType.Name(field_proto.type).removeprefix("TYPE_").lower()
    if field_proto.type_name:
        return f"{name} {field_proto.type_name}"
    return name


def real_oneof_name(message, field_proto) -> str | None:
    """Return the field's oneof, or None for no oneof or a proto3-optional one."""
    if not field_proto.HasField("oneof_index") or field_proto.proto3_optional:
        return None
    return message.oneof_decl[field_proto.oneof_index].name


# ---------------------------------------------------------------------------
# Comparison


def compare_field(ours_message, ours_field, modal_message, modal_field, label, comment, result):
    differences = result.differences

    if ours_field.number != modal_field.number:
        differences.append(f"{label}: number {ours_field.number} != Modal's {modal_field.number}")
    if ours_field.type != modal_field.type or ours_field.type_name != modal_field.type_name:
        differences.append(f"{label}: type {type_text(ours_field)} != Modal's {type_text(modal_field)}")
    if ours_field.label != modal_field.label:
        differences.append(
            f"{label}: label {FieldLabel.Name(ours_field.label)} != Modal's {FieldLabel.Name(modal_field.label)}"
        )

    ours_oneof = real_oneof_name(ours_message, ours_field)
    modal_oneof = real_oneof_name(modal_message, modal_field)
    if ours_oneof != modal_oneof:
        differences.append(f"{label}: oneof {ours_oneof} != Modal's {modal_oneof}")

    if modal_field.proto3_optional and not ours_field.proto3_optional:
        result.optional_fields.append(label)
        if OPTIONAL_MARKER not in comment.lower():
            differences.append(
                f"{label}: proto3 optional in Modal's API but plain here, and its comment "
                f"does not say \"optional in Modal's API\" and what the missing presence means"
            )
    elif ours_field.proto3_optional and not modal_field.proto3_optional:
        differences.append(f"{label}: proto3 optional here but plain in Modal's API")


def compare_message(name, ours_message, ours_path, modal_message, package, comments, result):
    label_prefix = short_name(name, package)

    if ours_message.options.map_entry != modal_message.options.map_entry:
        result.differences.append(
            f"{label_prefix}: map entry {ours_message.options.map_entry} "
            f"!= Modal's {modal_message.options.map_entry}"
        )

    modal_by_name = {field_proto.name: field_proto for field_proto in modal_message.field}
    modal_by_number = {field_proto.number: field_proto for field_proto in modal_message.field}

    for index, ours_field in enumerate(ours_message.field):
        label = f"{label_prefix}.{ours_field.name}"
        modal_field = modal_by_name.get(ours_field.name)
        if modal_field is None:
            same_number = modal_by_number.get(ours_field.number)
            hint = f" (Modal's field {ours_field.number} is {same_number.name})" if same_number else ""
            result.differences.append(f"{label}: no such field in Modal's {label_prefix}{hint}")
            continue

        comment = comments.get((*ours_path, MESSAGE_FIELD, index), "")
        compare_field(ours_message, ours_field, modal_message, modal_field, label, comment, result)


def compare_enum(name, ours_enum, modal_enum, package, result):
    label_prefix = short_name(name, package)
    modal_values = {value.name: value.number for value in modal_enum.value}
    ours_values = {value.name for value in ours_enum.value}

    for value in ours_enum.value:
        label = f"{label_prefix}.{value.name}"
        if value.name not in modal_values:
            result.differences.append(f"{label}: no such value in Modal's {label_prefix}")
        elif value.number != modal_values[value.name]:
            result.differences.append(f"{label}: number {value.number} != Modal's {modal_values[value.name]}")

    missing = [value_name for value_name in modal_values if value_name not in ours_values]
    if missing:
        result.notes.append(f"{label_prefix} leaves out Modal's values {', '.join(missing)}")


def compare_services(ours_file, modal_file, result):
    modal_services = {service.name: service for service in modal_file.service}

    for service in ours_file.service:
        modal_service = modal_services.get(service.name)
        if modal_service is None:
            result.differences.append(f"service {service.name}: not in Modal's API")
            continue

        modal_methods = {method.name: method for method in modal_service.method}
        for method in service.method:
            label = f"{service.name}.{method.name}"
            modal_method = modal_methods.get(method.name)
            if modal_method is None:
                result.differences.append(f"{label}: no such method in Modal's {service.name}")
                continue

            for attribute in ("input_type", "output_type", "client_streaming", "server_streaming"):
                ours_value = getattr(method, attribute)
                modal_value = getattr(modal_method, attribute)
                if ours_value != modal_value:
                    result.differences.append(f"{label}: {attribute} {ours_value} != Modal's {modal_value}")


def compare_files(ours_file, modal_file) -> Comparison:
    """Compare every message, enum and method of ours_file with modal_file."""
    result = Comparison()
    package = modal_file.package

    if ours_file.package != modal_file.package:
        result.differences.append(f"package {ours_file.package} != Modal's {modal_file.package}")
    if ours_file.syntax != modal_file.syntax:
        result.differences.append(f"syntax {ours_file.syntax} != Modal's {modal_file.syntax}")

    comments = index_comments(ours_file)
    ours_messages = index_messages(ours_file)
    modal_messages = index_messages(modal_file)

    for name, (ours_message, ours_path) in ours_messages.items():
        modal_entry = modal_messages.get(name)
        if modal_entry is None:
            result.differences.append(f"{short_name(name, package)}: no such message in Modal's API")
            continue
        modal_message, _modal_path = modal_entry
        compare_message(name, ours_message, ours_path, modal_message, package, comments, result)

    modal_enums = index_enums(modal_file, modal_messages)
    for name, ours_enum in index_enums(ours_file, ours_messages).items():
        modal_enum = modal_enums.get(name)
        if modal_enum is None:
            result.differences.append(f"{short_name(name, package)}: no such enum in Modal's API")
            continue
        compare_enum(name, ours_enum, modal_enum, package, result)

    compare_services(ours_file, modal_file, result)

    if result.optional_fields:
        all_comments = " ".join(comments.values()).lower()
        if "protoc-c" not in all_comments or "presence" not in all_comments:
            result.differences.append(
                "file: declares proto3-optional fields as plain fields but no comment explains "
                "why (protoc-c) and what that means for presence"
            )
    return result


def format_differences(proto_file: Path, differences: list[str]) -> str:
    header = f"{proto_file} differs from modal_proto.api_pb2 in {len(differences)} place(s):"
    return "\n".join([header, *differences])


# ---------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def modal_file():
    return modal_file_descriptor()


# The note must stay visible, and must not fail the test where warnings are errors.
@pytest.mark.filterwarnings("default:fields that are proto3 optional:UserWarning")
def test_modal_api_proto_matches_modal(tmp_path, modal_file):
    proto_file = Path(os.environ.get("MFMODAL_PROTO", DEFAULT_PROTO)).resolve()
    assert proto_file.is_file(), f"{proto_file} not found; set MFMODAL_PROTO to the .proto to check"

    ours_file = compile_proto(proto_file, tmp_path)
    assert ours_file.message_type, f"{proto_file} defines no messages"
    assert [service.name for service in ours_file.service] == ["ModalClient"], (
        f"{proto_file} must define exactly one service, ModalClient"
    )

    result = compare_files(ours_file, modal_file)

    if result.optional_fields:
        note = (
            "fields that are proto3 optional in Modal's API and plain here "
            "(no presence; each has a comment saying so): " + ", ".join(result.optional_fields)
        )
        print(note)
        warnings.warn(note, ProtoConformanceNote, stacklevel=1)
    for note in result.notes:
        print(note)

    assert not result.differences, format_differences(proto_file, result.differences)


WRONG_PROTO = """\
syntax = "proto3";

package modal.client;

import "google/protobuf/empty.proto";

message SandboxWaitRequest {
  string sandbox_id = 1;
  float timeout = 3;
}

message SandboxTerminateRequest {
  int64 sandbox_id = 1;
}

message SandboxWaitResponse {
  GenericResult outcome = 1;
}

message GenericResult {
  int32 status = 1;
}

message SecretGetOrCreateRequest {
  map<string, int32> env_dict = 5;
  repeated string app_id = 6;
}

message Sandbox {
  string workdir = 8;
}

message MessageNotInModal {
  string value = 1;
}

enum FileDescriptor {
  FILE_DESCRIPTOR_UNSPECIFIED = 0;
  FILE_DESCRIPTOR_STDOUT = 2;
  FILE_DESCRIPTOR_PIPE = 7;
}

service ModalClient {
  rpc SandboxWait(SandboxWaitRequest) returns (SandboxTerminateRequest);
  rpc SandboxGetLogs(SandboxWaitRequest) returns (SandboxWaitResponse);
  rpc ClientHello(SandboxWaitRequest) returns (stream google.protobuf.Empty);
  rpc MethodNotInModal(SandboxWaitRequest) returns (SandboxWaitResponse);
}
"""

WRONG_PROTO_DIFFERENCES = [
    "SandboxWaitRequest.timeout: number 3 != Modal's 2",
    "SandboxTerminateRequest.sandbox_id: type int64 != Modal's string",
    "SandboxWaitResponse.outcome: no such field in Modal's SandboxWaitResponse (Modal's field 1 is result)",
    "GenericResult.status: type int32 != Modal's enum .modal.client.GenericResult.GenericStatus",
    "SecretGetOrCreateRequest.EnvDictEntry.value: type int32 != Modal's string",
    "SecretGetOrCreateRequest.app_id: label LABEL_REPEATED != Modal's LABEL_OPTIONAL",
    "Sandbox.workdir: proto3 optional in Modal's API but plain here, and its comment "
    "does not say \"optional in Modal's API\" and what the missing presence means",
    "MessageNotInModal: no such message in Modal's API",
    "FileDescriptor.FILE_DESCRIPTOR_STDOUT: number 2 != Modal's 1",
    "FileDescriptor.FILE_DESCRIPTOR_PIPE: no such value in Modal's FileDescriptor",
    "ModalClient.SandboxWait: output_type .modal.client.SandboxTerminateRequest "
    "!= Modal's .modal.client.SandboxWaitResponse",
    "ModalClient.SandboxGetLogs: input_type .modal.client.SandboxWaitRequest "
    "!= Modal's .modal.client.SandboxGetLogsRequest",
    "ModalClient.SandboxGetLogs: output_type .modal.client.SandboxWaitResponse "
    "!= Modal's .modal.client.TaskLogsBatch",
    "ModalClient.SandboxGetLogs: server_streaming False != Modal's True",
    "ModalClient.ClientHello: input_type .modal.client.SandboxWaitRequest != Modal's .google.protobuf.Empty",
    "ModalClient.ClientHello: output_type .google.protobuf.Empty != Modal's .modal.client.ClientHelloResponse",
    "ModalClient.ClientHello: server_streaming True != Modal's False",
    "ModalClient.MethodNotInModal: no such method in Modal's ModalClient",
    "file: declares proto3-optional fields as plain fields but no comment explains "
    "why (protoc-c) and what that means for presence",
]


def test_conformance_check_reports_differences(tmp_path, modal_file):
    proto_file = tmp_path / "wrong_api.proto"
    proto_file.write_text(WRONG_PROTO)

    ours_file = compile_proto(proto_file, tmp_path)
    result = compare_files(ours_file, modal_file)

    for expected in WRONG_PROTO_DIFFERENCES:
        assert expected in result.differences, (
            f"missing difference: {expected}\nreported:\n" + "\n".join(result.differences)
        )
    assert len(result.differences) == len(WRONG_PROTO_DIFFERENCES), (
        "unexpected differences:\n"
        + "\n".join(line for line in result.differences if line not in WRONG_PROTO_DIFFERENCES)
    )
    assert result.optional_fields == ["Sandbox.workdir"]
    assert "FileDescriptor leaves out Modal's values FILE_DESCRIPTOR_STDERR, FILE_DESCRIPTOR_INFO" in result.notes


def test_conformance_check_accepts_documented_optional(tmp_path, modal_file):
    proto_file = tmp_path / "optional_api.proto"
    proto_file.write_text(
        'syntax = "proto3";\n'
        "package modal.client;\n"
        "// protoc-c rejects proto3 optional, so these fields have no presence.\n"
        "message SandboxGetTaskIdRequest {\n"
        "  string sandbox_id = 1;\n"
        "  float timeout = 2;  // optional in Modal's API; 0 sends nothing\n"
        "}\n"
    )

    ours_file = compile_proto(proto_file, tmp_path)
    result = compare_files(ours_file, modal_file)

    assert result.differences == []
    assert result.optional_fields == ["SandboxGetTaskIdRequest.timeout"]
