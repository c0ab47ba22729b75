//! What a client's request needs of its caller: etcd's permission checks, named. The
//! server says which check a request needs; the node resolves the caller's credentials
//! (its token or certificate name) and makes the check against its auth store and store,
//! in the same step as the answer that depends on it.

use crate::auth::{Access, AuthError, AuthInfo, Credentials};
use crate::mvcc::TxnRequest;

use super::Node;

/// A permission check of etcd's, for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallerCheck {
    /// Anyone may (etcd's `AuthStatus`).
    Anyone,
    /// With auth on, the caller must name a user (etcd's `requireAuthInfo`).
    User,
    /// The caller must be an admin (etcd's `isAdminPermitted`).
    Admin,
    /// An admin, or the user named (a user may read their own entry).
    AdminOrUser(String),
    /// An admin, or a user holding the role named.
    AdminOrRoleHolder(String),
    /// `access` to the keys `[key, range_end)` (etcd's `isRangeOpPermitted`).
    Keys {
        access: Access,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    /// Read access to every key a read-only txn reads, its compares' included.
    ReadTxn(TxnRequest),
    /// A user with `access` to every key on the lease, or an admin (etcd's
    /// `checkLeaseRenew` and, when the keys are listed, `checkLeaseTimeToLive`).
    LeaseKeys { lease_id: i64, access: Access },
    /// A user that is an admin or may read every key on any lease (etcd's
    /// `checkLeaseLeases`).
    EveryLeaseKey,
}

impl Node {
    /// Who `credentials` name (none with auth off), if they may make a request that needs
    /// `check`. Using a token starts its time to live again.
    pub fn authorize(
        &mut self,
        credentials: &Credentials,
        check: &CallerCheck,
    ) -> Result<Option<AuthInfo>, AuthError> {
        let caller = self.resolve(credentials)?;
        self.check_caller(caller.as_ref(), check)?;
        Ok(caller)
    }

    fn check_caller(
        &self,
        caller: Option<&AuthInfo>,
        check: &CallerCheck,
    ) -> Result<(), AuthError> {
        let auth = self.auth();
        let store = self.store();
        match check {
            CallerCheck::Anyone => Ok(()),
            CallerCheck::User => auth.check_user(caller),
            CallerCheck::Admin => auth.check_admin(caller),
            CallerCheck::AdminOrUser(name) => match caller {
                Some(caller) if caller.user == *name => Ok(()),
                _ => auth.check_admin(caller),
            },
            CallerCheck::AdminOrRoleHolder(role) => {
                let holds = caller
                    .and_then(|caller| auth.user(&caller.user))
                    .is_some_and(|user| user.roles.contains(role));
                if holds {
                    return Ok(());
                }
                auth.check_admin(caller)
            }
            CallerCheck::Keys {
                access,
                key,
                range_end,
            } => auth.check_access(caller, *access, key, range_end),
            CallerCheck::ReadTxn(txn) => auth.check_txn(caller, store, txn),
            CallerCheck::LeaseKeys { lease_id, access } => {
                auth.check_user(caller)?;
                auth.check_lease_keys(caller, store, *lease_id, *access)
            }
            CallerCheck::EveryLeaseKey => {
                auth.check_user(caller)?;
                if auth.check_admin(caller).is_ok() {
                    return Ok(());
                }
                store
                    .try_for_each_lease_key(|key| auth.check_access(caller, Access::Read, key, b""))
            }
        }
    }
}
