// The one mapping between flap::Status and grpc::Status, used by both ends of the
// coordinator's API: the service answers with ToGrpc, the client turns replies back with
// FromGrpc. Status::Code has gRPC's codes with gRPC's numbers, so the mapping is one to one and
// a code survives the round trip (FAILED_PRECONDITION stays kFailedPrecondition, ABORTED stays
// kAborted, and so on); callers branch on the code, never on the message. The one code of the
// project's own, kIOError (a read or write refused on the coordinator's side), crosses as
// UNAVAILABLE and comes back as kUnavailable.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "common/status.h"

namespace flap::coordinator {

#define FLAP_SAME_CODE_(flap_code, grpc_code) \
  static_assert(static_cast<int>(Status::Code::flap_code) == static_cast<int>(grpc::StatusCode::grpc_code))
FLAP_SAME_CODE_(kOk, OK);
FLAP_SAME_CODE_(kCancelled, CANCELLED);
FLAP_SAME_CODE_(kUnknown, UNKNOWN);
FLAP_SAME_CODE_(kInvalidArgument, INVALID_ARGUMENT);
FLAP_SAME_CODE_(kDeadlineExceeded, DEADLINE_EXCEEDED);
FLAP_SAME_CODE_(kNotFound, NOT_FOUND);
FLAP_SAME_CODE_(kAlreadyExists, ALREADY_EXISTS);
FLAP_SAME_CODE_(kPermissionDenied, PERMISSION_DENIED);
FLAP_SAME_CODE_(kResourceExhausted, RESOURCE_EXHAUSTED);
FLAP_SAME_CODE_(kFailedPrecondition, FAILED_PRECONDITION);
FLAP_SAME_CODE_(kAborted, ABORTED);
FLAP_SAME_CODE_(kOutOfRange, OUT_OF_RANGE);
FLAP_SAME_CODE_(kUnimplemented, UNIMPLEMENTED);
FLAP_SAME_CODE_(kInternal, INTERNAL);
FLAP_SAME_CODE_(kUnavailable, UNAVAILABLE);
FLAP_SAME_CODE_(kDataLoss, DATA_LOSS);
FLAP_SAME_CODE_(kUnauthenticated, UNAUTHENTICATED);
#undef FLAP_SAME_CODE_

// kIOError, this project's own code (a local read or write refused), crosses as UNAVAILABLE.
inline grpc::StatusCode ToGrpcCode(Status::Code code) {
  return code == Status::Code::kIOError ? grpc::StatusCode::UNAVAILABLE : static_cast<grpc::StatusCode>(code);
}

// A code outside gRPC's set (none is sent today) reads as kUnknown.
inline Status::Code FromGrpcCode(grpc::StatusCode code) {
  const int c = static_cast<int>(code);
  return c >= 0 && c <= static_cast<int>(Status::Code::kUnauthenticated) ? static_cast<Status::Code>(c)
                                                                         : Status::Code::kUnknown;
}

// The name of a gRPC status code ("NOT_FOUND"), as the client's messages and the
// coordinator's metrics show it.
inline const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "INTERNAL";
  }
}

inline grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(ToGrpcCode(s.code()), s.message());
}

// The same code; the message starts with the gRPC code name, e.g.
// "[UNAUTHENTICATED] wrong token ...".
inline Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return Status::OK();
  return Status::FromCode(FromGrpcCode(s.error_code()),
                          std::string("[") + GrpcCodeName(s.error_code()) + "] " + s.error_message());
}

}  // namespace flap::coordinator
