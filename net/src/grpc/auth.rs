//! The Auth service: etcd's users, roles and permissions, and logins.
//!
//! Changes go through Raft as [`AuthCommand`]s and are checked (admin rights) when they
//! apply; reads (`AuthStatus`, `UserGet`, `RoleGet`, the lists) are linearizable reads of the
//! replicated auth store. Passwords never enter the log: a new password is hashed here with
//! bcrypt and a salt chosen here (as etcd's API layer does), and a login's password is checked
//! here against the stored hash before the `Authenticate` entry is proposed.

use std::time::SystemTime;

use keel_core::auth::{
    AuthCommand, AuthError, AuthResponse, Credentials, Permission, PermissionType,
};
use keel_core::node::{Outcome, ProposalBody};
use tonic::{Request, Response, Status};
use tracing::info;

use super::convert::HeaderSource;
use super::status;
use super::Api;
use crate::proto::authpb;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::server_loop::handle::Consistency;
use keel_core::node::query::{
    Ask, Headed, PasswordHash, ReadAuthStatus, RoleGet, RoleList, UserGet, UserList,
};
use keel_core::node::CallerCheck;

/// etcd's default `--bcrypt-cost`.
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// A login whose password check was overtaken by an auth change is tried again this often.
const LOGIN_ATTEMPTS: usize = 3;

#[derive(Clone, Debug)]
pub struct AuthService {
    api: Api,
    bcrypt_cost: u32,
}

impl AuthService {
    pub fn new(api: Api, bcrypt_cost: u32) -> AuthService {
        AuthService { api, bcrypt_cost }
    }

    /// Proposes `command` as the caller and waits for its answer and header.
    async fn change(
        &self,
        command: AuthCommand,
        credentials: &Credentials,
    ) -> Result<(AuthResponse, pb::ResponseHeader), Status> {
        let written = self
            .api
            .write_as(ProposalBody::Auth(command), credentials)
            .await?;
        let header = self.api.current_header().await?;
        match written.outcome {
            Outcome::Auth(Ok(response)) => Ok((response, header)),
            Outcome::Auth(Err(error)) => Err(status(&error)),
            Outcome::Lost => Err(status(crate::server_loop::handle::ApiError::LeaderChanged)),
            _ => Err(super::unexpected_response("auth change")),
        }
    }

    /// A change whose answer is just a header.
    async fn change_header(
        &self,
        command: AuthCommand,
        credentials: &Credentials,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        Ok(Some(self.change(command, credentials).await?.1))
    }

    /// A linearizable read of the auth store by an authorized caller.
    async fn read<T, Q>(
        &self,
        credentials: &Credentials,
        check: CallerCheck,
        query: Q,
    ) -> Result<(T, pb::ResponseHeader), Status>
    where
        Q: Ask<Answer = Headed<Result<T, AuthError>>> + Clone + Send,
        T: Send,
    {
        let Headed {
            value,
            term,
            revision,
        } = self
            .api
            .ask_as(Consistency::Linearizable, credentials, check, query)
            .await?;
        let value = value.map_err(|e| status(&e))?;
        Ok((value, self.api.header_at(term).header(revision)))
    }

    /// bcrypt with a fresh salt, off the async workers (it is slow on purpose).
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.bcrypt_cost;
        let mut salt = [0u8; 16];
        crate::random::fill(&mut salt);
        off_the_workers(move || bcrypt::hash_with_salt(password, cost, salt))
            .await?
            .map(|parts| parts.to_string())
            .map_err(|e| Status::internal(format!("password hashing failed: {e}")))
    }

    /// Checks `password` against `name`'s stored hash; the auth revision it was read at.
    async fn check_password(&self, name: &str, password: String) -> Result<u64, Status> {
        let wanted = PasswordHash {
            name: name.to_string(),
        };
        let (hash, revision) = self
            .api
            .handle
            .ask(Consistency::Linearizable, wanted)
            .await
            .map_err(status)?
            .map_err(|e| status(&e))?;
        let matches = off_the_workers(move || bcrypt::verify(password, &hash))
            .await?
            .unwrap_or(false);
        if !matches {
            info!(user = name, "invalid password");
            return Err(status(&AuthError::AuthFailed));
        }
        Ok(revision)
    }

    async fn new_hash(
        &self,
        password: String,
        no_password: bool,
    ) -> Result<Option<String>, Status> {
        if no_password {
            return Ok(None);
        }
        Ok(Some(self.hash(password).await?))
    }
}

/// Runs slow work (bcrypt) off the async workers (see `crate::blocking`).
async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    crate::blocking::blocking(work)
        .await
        .ok_or_else(|| Status::internal("password hashing failed"))
}

fn permission_type(perm_type: i32) -> PermissionType {
    match authpb::permission::Type::try_from(perm_type) {
        Ok(authpb::permission::Type::Write) => PermissionType::Write,
        Ok(authpb::permission::Type::Readwrite) => PermissionType::ReadWrite,
        // READ is 0, the default, as in etcd.
        _ => PermissionType::Read,
    }
}

fn wire_permission(permission: Permission) -> authpb::Permission {
    let perm_type = match permission.kind {
        PermissionType::Read => authpb::permission::Type::Read,
        PermissionType::Write => authpb::permission::Type::Write,
        PermissionType::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission {
        perm_type: perm_type as i32,
        key: permission.key.into(),
        range_end: permission.range_end.into(),
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let header = self
            .change_header(AuthCommand::Enable, &credentials)
            .await?;
        info!("authentication enabled");
        Ok(Response::new(pb::AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let header = self
            .change_header(AuthCommand::Disable, &credentials)
            .await?;
        info!("authentication disabled");
        Ok(Response::new(pb::AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let (status, header) = self
            .read(&credentials, CallerCheck::Anyone, ReadAuthStatus)
            .await?;
        Ok(Response::new(pb::AuthStatusResponse {
            header: Some(header),
            enabled: status.enabled,
            auth_revision: status.revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let pb::AuthenticateRequest { name, password } = request.into_inner();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let checked_revision = self.check_password(&name, password.clone()).await?;
            let login = AuthCommand::Authenticate {
                name: name.clone(),
                token_prefix: crate::random::token_prefix(),
                checked_revision,
            };
            match self.change(login, &Credentials::default()).await {
                Ok((AuthResponse::Token(token), header)) => {
                    let token = match &self.api.jwt {
                        // The login applied at `checked_revision` (it fails otherwise).
                        Some(jwt) => jwt
                            .sign(&name, checked_revision, SystemTime::now())
                            .map_err(Status::unknown)?,
                        None => token,
                    };
                    return Ok(Response::new(pb::AuthenticateResponse {
                        header: Some(header),
                        token,
                    }));
                }
                Ok(_) => return Err(super::unexpected_response("login")),
                // The auth store changed between the check and the login: check again.
                Err(status)
                    if attempts < LOGIN_ATTEMPTS
                        && status.message() == AuthError::AuthOldRevision.to_string() => {}
                Err(status) => return Err(status),
            }
        }
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let wire = request.into_inner();
        let no_password = wire.options.is_some_and(|o| o.no_password);
        let password_hash = self.new_hash(wire.password, no_password).await?;
        let add = AuthCommand::UserAdd {
            name: wire.name,
            password_hash,
            no_password,
        };
        let header = self.change_header(add, &credentials).await?;
        Ok(Response::new(pb::AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let name = request.into_inner().name;
        // An admin, or a user asking about themselves (etcd's rule).
        let check = CallerCheck::AdminOrUser(name.clone());
        let (roles, header) = self.read(&credentials, check, UserGet { name }).await?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: Some(header),
            roles,
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let (users, header) = self
            .read(&credentials, CallerCheck::Admin, UserList)
            .await?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: Some(header),
            users,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let name = request.into_inner().name;
        let header = self
            .change_header(AuthCommand::UserDelete { name }, &credentials)
            .await?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let wire = request.into_inner();
        let password_hash = Some(self.hash(wire.password).await?);
        let change = AuthCommand::UserChangePassword {
            name: wire.name,
            password_hash,
        };
        let header = self.change_header(change, &credentials).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let wire = request.into_inner();
        let grant = AuthCommand::UserGrantRole {
            user: wire.user,
            role: wire.role,
        };
        let header = self.change_header(grant, &credentials).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let wire = request.into_inner();
        let revoke = AuthCommand::UserRevokeRole {
            name: wire.name,
            role: wire.role,
        };
        let header = self.change_header(revoke, &credentials).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let name = request.into_inner().name;
        let header = self
            .change_header(AuthCommand::RoleAdd { name }, &credentials)
            .await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let role = request.into_inner().role;
        // An admin, or a user holding the role (etcd's rule).
        let check = CallerCheck::AdminOrRoleHolder(role.clone());
        let (permissions, header) = self.read(&credentials, check, RoleGet { role }).await?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: Some(header),
            perm: permissions.into_iter().map(wire_permission).collect(),
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let (roles, header) = self
            .read(&credentials, CallerCheck::Admin, RoleList)
            .await?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: Some(header),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let name = request.into_inner().role;
        let header = self
            .change_header(AuthCommand::RoleDelete { name }, &credentials)
            .await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let wire = request.into_inner();
        let permission = wire.perm.map(|perm| Permission {
            kind: permission_type(perm.perm_type),
            key: perm.key.to_vec(),
            range_end: perm.range_end.to_vec(),
        });
        let grant = AuthCommand::RoleGrantPermission {
            name: wire.name,
            permission,
        };
        let header = self.change_header(grant, &credentials).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header,
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let wire = request.into_inner();
        let revoke = AuthCommand::RoleRevokePermission {
            role: wire.role,
            key: wire.key.to_vec(),
            range_end: wire.range_end.to_vec(),
        };
        let header = self.change_header(revoke, &credentials).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_types_map_both_ways() {
        for kind in [
            PermissionType::Read,
            PermissionType::Write,
            PermissionType::ReadWrite,
        ] {
            let wire = wire_permission(Permission {
                kind,
                key: b"k".to_vec(),
                range_end: Vec::new(),
            });
            assert_eq!(permission_type(wire.perm_type), kind);
        }
    }

    #[test]
    fn a_hash_checks_its_password_only() {
        let hash = bcrypt::hash_with_salt("secret", 4, [7u8; 16])
            .unwrap()
            .to_string();
        assert!(bcrypt::verify("secret", &hash).unwrap());
        assert!(!bcrypt::verify("guess", &hash).unwrap());
        assert!(!hash.contains("secret"));
    }
}
