//! etcd's authentication and role-based access control as a pure state machine: users with
//! password hashes and roles, roles with permissions on keys and key ranges, the `root`
//! user and role, and the auth revision that moves with every change. It is replicated
//! through Raft ([`AuthCommand`]s in the log) and part of the snapshot image.
//!
//! Nothing here hashes or checks a password: the server hashes a new password (bcrypt,
//! with a salt it picks) before proposing, and checks a password against the stored hash
//! before proposing an `Authenticate`. The log and the image hold hashes only.
//!
//! Who may do what ([`AuthStore::check_command`] and friends) follows etcd's
//! `server/auth/store.go` and `server/etcdserver/apply/auth.go`.

mod error;
mod perms;
mod tokens;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use error::AuthError;
pub use perms::{is_permitted, is_valid_permission_range, Access, Permission, PermissionType};
pub use tokens::{Tokens, MAX_TOKENS};

use crate::mvcc::{AlarmAction, Command, RequestOp, Store, TxnRequest};

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// Who a request runs as: a user and the auth revision their credentials were checked at
/// (etcd's `AuthInfo`). A write carries it in its log entry and is checked when applied;
/// if the auth store changed since, the write fails with `AuthOldRevision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthInfo {
    pub user: String,
    pub revision: u64,
}

/// What a client presented: a token (gRPC metadata `token` or `authorization`) and, with
/// client certificate authentication on, the common name of its verified certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub token: Option<String>,
    pub common_name: Option<String>,
    /// A signed token (JWT) whose signature and expiry the server checked: the user and
    /// the auth revision it was issued at. It is checked as any caller is, so one issued
    /// before an auth change is refused with `AuthOldRevision`, as in etcd.
    pub signed: Option<AuthInfo>,
}

/// Who proposed a write: the server itself (lease expiry, automatic compaction, member
/// attributes), which auth never refuses, or a client, checked when the entry applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    Server,
    Client(Option<AuthInfo>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// bcrypt hash (in its text form); `None` for a user added with `no_password`.
    pub password_hash: Option<String>,
    /// Sorted, as etcd keeps them.
    pub roles: BTreeSet<String>,
    pub no_password: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Sorted by key, then range end.
    pub permissions: Vec<Permission>,
}

/// The writes of the Auth service, as they travel in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    Enable,
    Disable,
    /// The password was checked by the proposer against the hash at `checked_revision`; the
    /// token is `<token_prefix>.<entry index>`.
    Authenticate {
        name: String,
        token_prefix: String,
        checked_revision: u64,
    },
    UserAdd {
        name: String,
        password_hash: Option<String>,
        no_password: bool,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password_hash: Option<String>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        name: String,
        permission: Option<Permission>,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

impl AuthCommand {
    /// etcd's `needAdminPermission`: everything but `Authenticate`.
    fn needs_admin(&self) -> bool {
        !matches!(self, AuthCommand::Authenticate { .. })
    }
}

/// The answer to an applied [`AuthCommand`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthResponse {
    Done,
    Token(String),
}

/// What applying an auth command asks of the (non-replicated) token table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenEffect {
    None,
    Assign { token: String, user: String },
    InvalidateUser(String),
    Clear,
}

/// etcd's auth store. The revision starts at 1 and moves with every change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

impl Default for AuthStore {
    fn default() -> AuthStore {
        AuthStore {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// What a read of the auth store answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthStatus {
    pub enabled: bool,
    pub revision: u64,
}

impl AuthStore {
    /// An auth store as a backup holds it.
    pub fn from_parts(
        enabled: bool,
        revision: u64,
        users: BTreeMap<String, User>,
        roles: BTreeMap<String, Role>,
    ) -> AuthStore {
        AuthStore {
            enabled,
            revision: revision.max(1),
            users,
            roles,
        }
    }

    pub fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    pub fn roles(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn status(&self) -> AuthStatus {
        AuthStatus {
            enabled: self.enabled,
            revision: self.revision,
        }
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// etcd's `UserGet`: the user's roles, sorted.
    pub fn user_get(&self, name: &str) -> Result<Vec<String>, AuthError> {
        let user = self.users.get(name).ok_or(AuthError::UserNotFound)?;
        Ok(user.roles.iter().cloned().collect())
    }

    /// etcd's `RoleGet`: the role's permissions; `root` shows its implicit one (read-write
    /// on every key).
    pub fn role_get(&self, name: &str) -> Result<Vec<Permission>, AuthError> {
        let role = self.roles.get(name).ok_or(AuthError::RoleNotFound)?;
        if name == ROOT_ROLE {
            return Ok(vec![Permission {
                kind: PermissionType::ReadWrite,
                key: Vec::new(),
                range_end: vec![0],
            }]);
        }
        Ok(role.permissions.clone())
    }

    /// The password hash to check a login against, with the revision it was read at.
    pub fn password_hash(&self, name: &str) -> Result<(String, u64), AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.no_password {
            return Err(AuthError::NoPasswordUser);
        }
        let hash = user.password_hash.clone().ok_or(AuthError::AuthFailed)?;
        Ok((hash, self.revision))
    }

    /// Who the credentials name, when auth is on (`None` when it is off: credentials are
    /// then ignored, as in etcd). A token goes first; the certificate's common name is used
    /// only without one.
    pub fn resolve(
        &self,
        credentials: &Credentials,
        tokens: &mut Tokens,
        now_ms: u64,
    ) -> Result<Option<AuthInfo>, AuthError> {
        if !self.enabled {
            return Ok(None);
        }
        if let Some(signed) = &credentials.signed {
            return Ok(Some(signed.clone()));
        }
        let user = match (&credentials.token, &credentials.common_name) {
            (Some(token), _) => tokens
                .use_token(token, now_ms)
                .ok_or(AuthError::InvalidAuthToken)?,
            (None, Some(name)) => name.clone(),
            (None, None) => return Ok(None),
        };
        Ok(Some(AuthInfo {
            user,
            revision: self.revision,
        }))
    }

    fn has_root_role(&self, name: &str) -> bool {
        self.users
            .get(name)
            .is_some_and(|user| user.roles.contains(ROOT_ROLE))
    }

    /// etcd's `IsAdminPermitted`: the caller has the root role (anyone, with auth off).
    pub fn check_admin(&self, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let info = caller.ok_or(AuthError::UserEmpty)?;
        if info.user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if !self.users.contains_key(&info.user) {
            return Err(AuthError::UserNotFound);
        }
        if !self.has_root_role(&info.user) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }

    /// etcd's `requireAuthInfo`: with auth on, some user must be named.
    pub fn check_user(&self, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        if self.enabled && caller.is_none() {
            return Err(AuthError::UserEmpty);
        }
        Ok(())
    }

    /// etcd's `isOpPermitted`: `access` to `[key, range_end)` (or `key` alone when
    /// `range_end` is empty) by the caller, with credentials checked at the current revision.
    pub fn check_access(
        &self,
        caller: Option<&AuthInfo>,
        access: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let info = caller.ok_or(AuthError::UserEmpty)?;
        if info.revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if info.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let user = self
            .users
            .get(&info.user)
            .ok_or(AuthError::PermissionDenied)?;
        if user.roles.contains(ROOT_ROLE) {
            return Ok(());
        }
        let permissions = user
            .roles
            .iter()
            .filter_map(|role| self.roles.get(role))
            .flat_map(|role| &role.permissions);
        if is_permitted(permissions, access, key, range_end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's `checkLeasePuts`: an admin, or write access to every key attached to lease `id`.
    pub fn check_lease_writes(
        &self,
        caller: Option<&AuthInfo>,
        store: &Store,
        id: i64,
    ) -> Result<(), AuthError> {
        self.check_lease_keys(caller, store, id, Access::Write)
    }

    /// An admin, or `access` to every key attached to lease `id` (an unknown lease: allowed).
    pub fn check_lease_keys(
        &self,
        caller: Option<&AuthInfo>,
        store: &Store,
        id: i64,
        access: Access,
    ) -> Result<(), AuthError> {
        if !self.enabled || self.check_admin(caller).is_ok() {
            return Ok(());
        }
        for key in store.lease_keys(id) {
            self.check_access(caller, access, &key, b"")?;
        }
        Ok(())
    }

    /// Whether `caller` may have a store `command` applied, as etcd's auth applier decides.
    pub fn check_command(
        &self,
        caller: &Caller,
        store: &Store,
        command: &Command,
    ) -> Result<(), AuthError> {
        let Caller::Client(info) = caller else {
            return Ok(());
        };
        if !self.enabled {
            return Ok(());
        }
        let info = info.as_ref();
        match command {
            Command::Put(put) => self.check_put(info, store, put),
            Command::DeleteRange(delete) => self.check_delete(info, delete),
            Command::Txn(txn) => self.check_txn(info, store, txn),
            Command::Compaction(_) | Command::LeaseCheckpoint(_) => self.check_admin(info),
            Command::LeaseGrant(_) => self.check_user(info),
            Command::LeaseRevoke(revoke) => {
                self.check_user(info)?;
                self.check_lease_writes(info, store, revoke.id)
            }
            Command::Alarm(alarm) => match alarm.action {
                AlarmAction::Get => self.check_user(info),
                AlarmAction::Activate | AlarmAction::Deactivate => self.check_admin(info),
            },
        }
    }

    fn check_put(
        &self,
        info: Option<&AuthInfo>,
        store: &Store,
        put: &crate::mvcc::PutRequest,
    ) -> Result<(), AuthError> {
        self.check_access(info, Access::Write, &put.key, b"")?;
        self.check_lease_writes(info, store, put.lease)?;
        if put.prev_kv {
            self.check_access(info, Access::Read, &put.key, b"")?;
        }
        Ok(())
    }

    fn check_delete(
        &self,
        info: Option<&AuthInfo>,
        delete: &crate::mvcc::DeleteRangeRequest,
    ) -> Result<(), AuthError> {
        self.check_access(info, Access::Write, &delete.key, &delete.range_end)?;
        if delete.prev_kv {
            self.check_access(info, Access::Read, &delete.key, &delete.range_end)?;
        }
        Ok(())
    }

    /// Every key a txn touches, in both branches, compares included (etcd's
    /// `checkTxnPermission`).
    pub fn check_txn(
        &self,
        info: Option<&AuthInfo>,
        store: &Store,
        txn: &TxnRequest,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        for compare in &txn.compare {
            self.check_access(info, Access::Read, &compare.key, &compare.range_end)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Range(range) => {
                    self.check_access(info, Access::Read, &range.key, &range.range_end)?
                }
                RequestOp::Put(put) => self.check_put(info, store, put)?,
                RequestOp::DeleteRange(delete) => self.check_delete(info, delete)?,
                RequestOp::Txn(inner) => self.check_txn(info, store, inner)?,
            }
        }
        Ok(())
    }

    /// Applies an auth command from `caller`, at log `index`. Refused commands change
    /// nothing.
    pub fn apply(
        &mut self,
        caller: &Caller,
        index: u64,
        command: &AuthCommand,
    ) -> (Result<AuthResponse, AuthError>, TokenEffect) {
        if let (Caller::Client(info), true) = (caller, command.needs_admin()) {
            if let Err(error) = self.check_admin(info.as_ref()) {
                return (Err(error), TokenEffect::None);
            }
        }
        match self.apply_checked(index, command) {
            Ok((response, effect)) => (Ok(response), effect),
            Err(error) => (Err(error), TokenEffect::None),
        }
    }

    fn apply_checked(
        &mut self,
        index: u64,
        command: &AuthCommand,
    ) -> Result<(AuthResponse, TokenEffect), AuthError> {
        use AuthCommand::*;
        let done = |effect| Ok((AuthResponse::Done, effect));
        match command {
            Enable => self.enable().and_then(|()| done(TokenEffect::None)),
            Disable => {
                if self.enabled {
                    self.enabled = false;
                    self.revision += 1;
                }
                done(TokenEffect::Clear)
            }
            Authenticate {
                name,
                token_prefix,
                checked_revision,
            } => {
                let token = self.authenticate(name, token_prefix, *checked_revision, index)?;
                Ok((
                    AuthResponse::Token(token.clone()),
                    TokenEffect::Assign {
                        token,
                        user: name.clone(),
                    },
                ))
            }
            UserAdd {
                name,
                password_hash,
                no_password,
            } => self
                .user_add(name, password_hash, *no_password)
                .and_then(|()| done(TokenEffect::None)),
            UserDelete { name } => self
                .user_delete(name)
                .and_then(|()| done(TokenEffect::InvalidateUser(name.clone()))),
            UserChangePassword {
                name,
                password_hash,
            } => self
                .user_change_password(name, password_hash)
                .and_then(|()| done(TokenEffect::InvalidateUser(name.clone()))),
            UserGrantRole { user, role } => self
                .user_grant_role(user, role)
                .and_then(|()| done(TokenEffect::None)),
            UserRevokeRole { name, role } => self
                .user_revoke_role(name, role)
                .and_then(|()| done(TokenEffect::None)),
            RoleAdd { name } => self.role_add(name).and_then(|()| done(TokenEffect::None)),
            RoleDelete { name } => self
                .role_delete(name)
                .and_then(|()| done(TokenEffect::None)),
            RoleGrantPermission { name, permission } => self
                .role_grant_permission(name, permission.as_ref())
                .and_then(|()| done(TokenEffect::None)),
            RoleRevokePermission {
                role,
                key,
                range_end,
            } => self
                .role_revoke_permission(role, key, range_end)
                .and_then(|()| done(TokenEffect::None)),
        }
    }

    /// etcd's `AuthEnable`: needs a root user with the root role; enabling twice is fine.
    /// The revision does not move (as in etcd).
    fn enable(&mut self) -> Result<(), AuthError> {
        if self.enabled {
            return Ok(());
        }
        let root = self
            .users
            .get(ROOT_USER)
            .ok_or(AuthError::RootUserNotExist)?;
        if !root.roles.contains(ROOT_ROLE) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        Ok(())
    }

    fn authenticate(
        &self,
        name: &str,
        token_prefix: &str,
        checked_revision: u64,
        index: u64,
    ) -> Result<String, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.no_password {
            return Err(AuthError::AuthFailed);
        }
        // The password may have changed since it was checked: the proposer checks again.
        if checked_revision != self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        Ok(Tokens::token_for(token_prefix, index))
    }

    fn user_add(
        &mut self,
        name: &str,
        password_hash: &Option<String>,
        no_password: bool,
    ) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(AuthError::UserAlreadyExist);
        }
        if !no_password && password_hash.is_none() {
            return Err(AuthError::NoPasswordUser);
        }
        let user = User {
            password_hash: if no_password {
                None
            } else {
                password_hash.clone()
            },
            roles: BTreeSet::new(),
            no_password,
        };
        self.users.insert(name.to_string(), user);
        self.revision += 1;
        Ok(())
    }

    fn user_delete(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT_USER {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(AuthError::UserNotFound)?;
        self.revision += 1;
        Ok(())
    }

    fn user_change_password(
        &mut self,
        name: &str,
        password_hash: &Option<String>,
    ) -> Result<(), AuthError> {
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        if !user.no_password {
            let hash = password_hash.clone().ok_or(AuthError::NoPasswordUser)?;
            user.password_hash = Some(hash);
        }
        self.revision += 1;
        Ok(())
    }

    fn user_grant_role(&mut self, name: &str, role: &str) -> Result<(), AuthError> {
        if !self.users.contains_key(name) {
            return Err(AuthError::UserNotFound);
        }
        // The root role need not exist as a role to be granted (etcd's rule).
        if role != ROOT_ROLE && !self.roles.contains_key(role) {
            return Err(AuthError::RoleNotFound);
        }
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        if user.roles.insert(role.to_string()) {
            self.revision += 1;
        }
        Ok(())
    }

    fn user_revoke_role(&mut self, name: &str, role: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT_USER && role == ROOT_ROLE {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        if !user.roles.remove(role) {
            return Err(AuthError::RoleNotGranted);
        }
        self.revision += 1;
        Ok(())
    }

    fn role_add(&mut self, name: &str) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        self.roles.insert(name.to_string(), Role::default());
        self.revision += 1;
        Ok(())
    }

    fn role_delete(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT_ROLE {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.remove(name);
        }
        self.revision += 1;
        Ok(())
    }

    fn role_grant_permission(
        &mut self,
        name: &str,
        permission: Option<&Permission>,
    ) -> Result<(), AuthError> {
        let permission = permission.ok_or(AuthError::PermissionNotGiven)?;
        if !is_valid_permission_range(&permission.key, &permission.range_end) {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let role = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
        let same_range =
            |p: &&mut Permission| p.key == permission.key && p.range_end == permission.range_end;
        match role.permissions.iter_mut().find(same_range) {
            Some(held) => held.kind = permission.kind,
            None => {
                role.permissions.push(permission.clone());
                role.permissions
                    .sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
            }
        }
        self.revision += 1;
        Ok(())
    }

    fn role_revoke_permission(
        &mut self,
        name: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        let role = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
        let before = role.permissions.len();
        role.permissions
            .retain(|p| p.key != key || p.range_end != range_end);
        if role.permissions.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.revision += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
