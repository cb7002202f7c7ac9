"""Encoding of ``grpc-status-details-bin`` the way Modal's SDK decodes it."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from grpclib.const import Status
from grpclib.encoding.base import StatusDetailsCodecBase
from modal_proto import api_pb2


class RPCStatusCodec(StatusDetailsCodecBase):
    """Status details codec built on ``modal.client.RPCStatus``.

    RPCStatus has the same field layout as ``google.rpc.Status``, so both Modal's
    SDK and any google.rpc decoder read it. Details are packed into
    ``google.protobuf.Any`` with the default ``type.googleapis.com/`` prefix.
    Clients match on the type name after the last "/".
    """

    def encode(self, status: Status, message: Optional[str], details: Sequence[Any]) -> bytes:
        proto = api_pb2.RPCStatus(code=status.value, message=message or "")
        for detail in details or ():
            proto.details.add().Pack(detail)
        return proto.SerializeToString()

    def decode(self, status: Status, message: Optional[str], data: bytes) -> Any:
        return list(api_pb2.RPCStatus.FromString(data).details)


def retry_policy_details(retry_after_secs: Optional[float]) -> Optional[list]:
    """Return the details list carrying an RPCRetryPolicy, or None when no delay is given."""
    if retry_after_secs is None:
        return None
    return [api_pb2.RPCRetryPolicy(retry_after_secs=retry_after_secs)]
