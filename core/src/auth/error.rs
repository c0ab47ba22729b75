//! Errors of the auth store. Each is an entry of etcd's errors ([`crate::rpctypes`]) and
//! displays etcd's gRPC message, byte for byte.

use std::fmt;

use crate::rpctypes::{RpcError, ToRpcError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    RootUserNotExist,
    RootRoleNotExist,
    UserAlreadyExist,
    UserEmpty,
    UserNotFound,
    RoleAlreadyExist,
    RoleNotFound,
    RoleEmpty,
    AuthFailed,
    /// etcd has no gRPC error for it: its clients see the store's own message, code Unknown.
    NoPasswordUser,
    PermissionNotGiven,
    PermissionDenied,
    RoleNotGranted,
    PermissionNotGranted,
    AuthNotEnabled,
    InvalidAuthToken,
    InvalidAuthMgmt,
    AuthOldRevision,
}

impl ToRpcError for AuthError {
    fn rpc_error(&self) -> RpcError {
        use AuthError::*;
        match self {
            RootUserNotExist => RpcError::RootUserNotExist,
            RootRoleNotExist => RpcError::RootRoleNotExist,
            UserAlreadyExist => RpcError::UserAlreadyExist,
            UserEmpty => RpcError::UserEmpty,
            UserNotFound => RpcError::UserNotFound,
            RoleAlreadyExist => RpcError::RoleAlreadyExist,
            RoleNotFound => RpcError::RoleNotFound,
            RoleEmpty => RpcError::RoleEmpty,
            AuthFailed => RpcError::AuthFailed,
            NoPasswordUser => RpcError::NoPasswordUser,
            PermissionNotGiven => RpcError::PermissionNotGiven,
            PermissionDenied => RpcError::PermissionDenied,
            RoleNotGranted => RpcError::RoleNotGranted,
            PermissionNotGranted => RpcError::PermissionNotGranted,
            AuthNotEnabled => RpcError::AuthNotEnabled,
            InvalidAuthToken => RpcError::InvalidAuthToken,
            InvalidAuthMgmt => RpcError::InvalidAuthMgmt,
            AuthOldRevision => RpcError::AuthOldRevision,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rpc_error().message())
    }
}

impl std::error::Error for AuthError {}
