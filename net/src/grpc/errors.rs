//! A client's error as a gRPC status, in one place: every error a client can meet is an
//! entry of etcd's errors (`keel_core::rpctypes`), whose code and message it carries.

use keel_core::rpctypes::{GrpcCode, RpcError, ToRpcError};
use tonic::{Code, Status};

/// The status a client sees for `error`: its entry's code, its message.
pub fn status(error: impl ToRpcError) -> Status {
    Status::new(code(error.rpc_error().code()), error.to_string())
}

/// The entry a status from another member carries, if it is one (detail-free) entry.
pub fn rpc_error_of(status: &Status) -> Option<RpcError> {
    RpcError::ALL
        .iter()
        .copied()
        .find(|e| code(e.code()) == status.code() && e.message() == status.message())
}

fn code(code: GrpcCode) -> Code {
    match code {
        GrpcCode::InvalidArgument => Code::InvalidArgument,
        GrpcCode::OutOfRange => Code::OutOfRange,
        GrpcCode::NotFound => Code::NotFound,
        GrpcCode::FailedPrecondition => Code::FailedPrecondition,
        GrpcCode::ResourceExhausted => Code::ResourceExhausted,
        GrpcCode::PermissionDenied => Code::PermissionDenied,
        GrpcCode::Unauthenticated => Code::Unauthenticated,
        GrpcCode::DataLoss => Code::DataLoss,
        GrpcCode::Unavailable => Code::Unavailable,
        GrpcCode::Unknown => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::auth::AuthError;
    use keel_core::mvcc;

    #[test]
    fn every_entry_comes_back_from_its_status() {
        for &error in RpcError::ALL {
            let status = status(error);
            assert_eq!(
                status.code().description(),
                code(error.code()).description()
            );
            assert_eq!(rpc_error_of(&status), Some(error), "{error:?}");
        }
    }

    #[test]
    fn each_kind_of_error_is_answered_with_its_entry() {
        let store = status(&mvcc::Error::Compacted);
        assert_eq!(store.code(), Code::OutOfRange);
        assert_eq!(
            store.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let auth = status(AuthError::InvalidAuthToken);
        assert_eq!(auth.code(), Code::Unauthenticated);
        assert_eq!(auth.message(), "etcdserver: invalid auth token");
        let failed = status(mvcc::Error::Storage {
            reason: "disk full".into(),
        });
        assert_eq!(failed.code(), Code::Unavailable);
        assert_eq!(
            failed.message(),
            "etcdserver: storage engine failed: disk full"
        );
        assert_eq!(
            rpc_error_of(&failed),
            None,
            "a detail is not the bare entry"
        );
    }
}
