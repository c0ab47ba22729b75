use super::*;
use crate::mvcc::{Compare, DeleteRangeRequest, PutRequest, RangeRequest, StoreConfig, TxnRequest};

fn client(user: &str, revision: u64) -> Caller {
    Caller::Client(Some(AuthInfo {
        user: user.to_string(),
        revision,
    }))
}

fn apply(store: &mut AuthStore, command: AuthCommand) -> Result<AuthResponse, AuthError> {
    store.apply(&Caller::Server, 1, &command).0
}

fn user_add(store: &mut AuthStore, name: &str) {
    let add = AuthCommand::UserAdd {
        name: name.into(),
        password_hash: Some("$2b$04$hash".into()),
        no_password: false,
    };
    apply(store, add).unwrap();
}

fn grant(store: &mut AuthStore, role: &str, kind: PermissionType, key: &str, end: &str) {
    let grant = AuthCommand::RoleGrantPermission {
        name: role.into(),
        permission: Some(Permission {
            kind,
            key: key.into(),
            range_end: end.into(),
        }),
    };
    apply(store, grant).unwrap();
}

fn grant_role(store: &mut AuthStore, user: &str, role: &str) {
    let grant = AuthCommand::UserGrantRole {
        user: user.into(),
        role: role.into(),
    };
    apply(store, grant).unwrap();
}

/// root (with the root role), alice (read `app/`), bob (write `jobs/`), auth enabled.
fn enabled_store() -> AuthStore {
    let mut store = AuthStore::default();
    for name in ["root", "alice", "bob"] {
        user_add(&mut store, name);
    }
    for role in ["reader", "writer"] {
        apply(&mut store, AuthCommand::RoleAdd { name: role.into() }).unwrap();
    }
    grant(&mut store, "reader", PermissionType::Read, "app/", "app0");
    grant(
        &mut store,
        "writer",
        PermissionType::Write,
        "jobs/",
        "jobs0",
    );
    grant_role(&mut store, "root", ROOT_ROLE);
    grant_role(&mut store, "alice", "reader");
    grant_role(&mut store, "bob", "writer");
    apply(&mut store, AuthCommand::Enable).unwrap();
    store
}

fn put(key: &str) -> Command {
    Command::Put(PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: "v".into(),
        ..PutRequest::default()
    })
}

fn kv() -> Store {
    Store::new(StoreConfig::default())
}

#[test]
fn auth_cannot_be_enabled_without_a_root_user_with_the_root_role() {
    let mut store = AuthStore::default();
    assert_eq!(
        apply(&mut store, AuthCommand::Enable),
        Err(AuthError::RootUserNotExist)
    );
    user_add(&mut store, "root");
    assert_eq!(
        apply(&mut store, AuthCommand::Enable),
        Err(AuthError::RootRoleNotExist)
    );
    grant_role(&mut store, "root", ROOT_ROLE);
    assert_eq!(
        apply(&mut store, AuthCommand::Enable),
        Ok(AuthResponse::Done)
    );
    assert!(store.is_enabled());
    // Enabling again is not an error.
    assert_eq!(
        apply(&mut store, AuthCommand::Enable),
        Ok(AuthResponse::Done)
    );
}

#[test]
fn every_change_moves_the_revision_and_refusals_change_nothing() {
    let mut store = AuthStore::default();
    assert_eq!(store.revision(), 1);
    user_add(&mut store, "alice");
    assert_eq!(store.revision(), 2);
    let before = store.clone();
    let again = AuthCommand::UserAdd {
        name: "alice".into(),
        password_hash: Some("x".into()),
        no_password: false,
    };
    assert_eq!(apply(&mut store, again), Err(AuthError::UserAlreadyExist));
    let unknown_role = AuthCommand::UserGrantRole {
        user: "alice".into(),
        role: "nope".into(),
    };
    assert_eq!(
        apply(&mut store, unknown_role),
        Err(AuthError::RoleNotFound)
    );
    assert_eq!(store, before);
}

#[test]
fn users_and_roles_are_managed_as_etcd_manages_them() {
    let mut store = enabled_store();
    assert_eq!(store.user_names(), ["alice", "bob", "root"]);
    assert_eq!(store.role_names(), ["reader", "writer"]);
    assert_eq!(store.user_get("alice").unwrap(), ["reader"]);
    assert_eq!(store.user_get("zed"), Err(AuthError::UserNotFound));
    // root cannot be deleted nor lose its role while auth is on.
    let delete_root = AuthCommand::UserDelete {
        name: "root".into(),
    };
    assert_eq!(
        apply(&mut store, delete_root),
        Err(AuthError::InvalidAuthMgmt)
    );
    let revoke_root = AuthCommand::UserRevokeRole {
        name: "root".into(),
        role: "root".into(),
    };
    assert_eq!(
        apply(&mut store, revoke_root),
        Err(AuthError::InvalidAuthMgmt)
    );
    // Deleting a role takes it from its users.
    apply(
        &mut store,
        AuthCommand::RoleDelete {
            name: "reader".into(),
        },
    )
    .unwrap();
    assert!(store.user_get("alice").unwrap().is_empty());
    let revoke = AuthCommand::UserRevokeRole {
        name: "bob".into(),
        role: "reader".into(),
    };
    assert_eq!(apply(&mut store, revoke), Err(AuthError::RoleNotGranted));
}

#[test]
fn permissions_are_granted_updated_and_revoked_by_exact_range() {
    let mut store = enabled_store();
    grant(
        &mut store,
        "reader",
        PermissionType::ReadWrite,
        "app/",
        "app0",
    );
    let perms = store.role_get("reader").unwrap();
    assert_eq!(perms.len(), 1);
    assert_eq!(perms[0].kind, PermissionType::ReadWrite);
    let wrong_range = AuthCommand::RoleRevokePermission {
        role: "reader".into(),
        key: b"app/".to_vec(),
        range_end: Vec::new(),
    };
    assert_eq!(
        apply(&mut store, wrong_range),
        Err(AuthError::PermissionNotGranted)
    );
    let revoke = AuthCommand::RoleRevokePermission {
        role: "reader".into(),
        key: b"app/".to_vec(),
        range_end: b"app0".to_vec(),
    };
    apply(&mut store, revoke).unwrap();
    assert!(store.role_get("reader").unwrap().is_empty());
    let invalid = AuthCommand::RoleGrantPermission {
        name: "reader".into(),
        permission: Some(Permission {
            kind: PermissionType::Read,
            key: Vec::new(),
            range_end: Vec::new(),
        }),
    };
    assert_eq!(apply(&mut store, invalid), Err(AuthError::InvalidAuthMgmt));
    let missing = AuthCommand::RoleGrantPermission {
        name: "reader".into(),
        permission: None,
    };
    assert_eq!(
        apply(&mut store, missing),
        Err(AuthError::PermissionNotGiven)
    );
}

#[test]
fn the_root_role_shows_read_write_on_every_key() {
    let mut store = enabled_store();
    apply(
        &mut store,
        AuthCommand::RoleAdd {
            name: "root".into(),
        },
    )
    .unwrap();
    let perms = store.role_get("root").unwrap();
    assert_eq!(perms[0].kind, PermissionType::ReadWrite);
    assert_eq!(perms[0].range_end, vec![0]);
}

#[test]
fn writes_are_checked_against_the_callers_roles() {
    let store = enabled_store();
    let rev = store.revision();
    let kv = kv();
    assert_eq!(
        store.check_command(&client("root", rev), &kv, &put("any")),
        Ok(())
    );
    assert_eq!(
        store.check_command(&client("bob", rev), &kv, &put("jobs/1")),
        Ok(())
    );
    assert_eq!(
        store.check_command(&client("bob", rev), &kv, &put("app/1")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        store.check_command(&client("alice", rev), &kv, &put("app/1")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        store.check_command(&Caller::Client(None), &kv, &put("jobs/1")),
        Err(AuthError::UserEmpty)
    );
    assert_eq!(
        store.check_command(&client("nobody", rev), &kv, &put("jobs/1")),
        Err(AuthError::PermissionDenied)
    );
    // The server's own writes are never refused.
    assert_eq!(store.check_command(&Caller::Server, &kv, &put("x")), Ok(()));
}

#[test]
fn credentials_checked_at_an_older_revision_are_refused() {
    let mut store = enabled_store();
    let old = store.revision();
    grant(
        &mut store,
        "writer",
        PermissionType::Write,
        "more/",
        "more0",
    );
    assert_eq!(
        store.check_command(&client("bob", old), &kv(), &put("jobs/1")),
        Err(AuthError::AuthOldRevision)
    );
}

#[test]
fn a_txn_is_checked_on_every_key_it_touches_compares_included() {
    let store = enabled_store();
    let rev = store.revision();
    let kv = kv();
    let txn = |compare_key: &str, success: Vec<RequestOp>| {
        Command::Txn(TxnRequest {
            compare: vec![Compare {
                key: compare_key.as_bytes().to_vec().into(),
                ..Compare::default()
            }],
            success,
            failure: Vec::new(),
        })
    };
    let put_op = |key: &str| {
        RequestOp::Put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            ..PutRequest::default()
        })
    };
    let range_op = |key: &str| {
        RequestOp::Range(RangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..RangeRequest::default()
        })
    };
    // bob may write jobs/ but not read it: a compare on jobs/ is a read.
    assert_eq!(
        store.check_command(
            &client("bob", rev),
            &kv,
            &txn("jobs/a", vec![put_op("jobs/b")])
        ),
        Err(AuthError::PermissionDenied)
    );
    let mut both = enabled_store();
    grant_role(&mut both, "bob", "reader");
    let rev = both.revision();
    assert_eq!(
        both.check_command(
            &client("bob", rev),
            &kv,
            &txn("app/a", vec![put_op("jobs/b")])
        ),
        Ok(())
    );
    assert_eq!(
        both.check_command(
            &client("bob", rev),
            &kv,
            &txn("app/a", vec![put_op("jobs/b"), range_op("secret")])
        ),
        Err(AuthError::PermissionDenied)
    );
    // A nested txn is checked too.
    let nested = RequestOp::Txn(TxnRequest {
        compare: Vec::new(),
        success: vec![put_op("app/x")],
        failure: Vec::new(),
    });
    assert_eq!(
        both.check_command(&client("bob", rev), &kv, &txn("app/a", vec![nested])),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn deletes_need_write_and_prev_kv_needs_read() {
    let store = enabled_store();
    let rev = store.revision();
    let delete = |prev_kv| {
        Command::DeleteRange(DeleteRangeRequest {
            key: "jobs/".into(),
            range_end: "jobs0".into(),
            prev_kv,
        })
    };
    assert_eq!(
        store.check_command(&client("bob", rev), &kv(), &delete(false)),
        Ok(())
    );
    assert_eq!(
        store.check_command(&client("bob", rev), &kv(), &delete(true)),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn admin_commands_need_the_root_role_once_auth_is_on() {
    let mut store = enabled_store();
    let rev = store.revision();
    let add = AuthCommand::RoleAdd { name: "x".into() };
    let (refused, _) = store.apply(&client("alice", rev), 2, &add);
    assert_eq!(refused, Err(AuthError::PermissionDenied));
    let (refused, _) = store.apply(&Caller::Client(None), 2, &add);
    assert_eq!(refused, Err(AuthError::UserEmpty));
    let (refused, _) = store.apply(&client("ghost", rev), 2, &add);
    assert_eq!(refused, Err(AuthError::UserNotFound));
    let (done, _) = store.apply(&client("root", rev), 2, &add);
    assert_eq!(done, Ok(AuthResponse::Done));
}

#[test]
fn authenticate_gives_a_token_named_by_the_entry_index() {
    let mut store = enabled_store();
    let rev = store.revision();
    let login = AuthCommand::Authenticate {
        name: "alice".into(),
        token_prefix: "abcdef".into(),
        checked_revision: rev,
    };
    let (answer, effect) = store.apply(&Caller::Client(None), 77, &login);
    assert_eq!(answer, Ok(AuthResponse::Token("abcdef.77".into())));
    assert_eq!(
        effect,
        TokenEffect::Assign {
            token: "abcdef.77".into(),
            user: "alice".into()
        }
    );
    let stale = AuthCommand::Authenticate {
        name: "alice".into(),
        token_prefix: "abcdef".into(),
        checked_revision: rev - 1,
    };
    assert_eq!(
        store.apply(&Caller::Client(None), 78, &stale).0,
        Err(AuthError::AuthOldRevision)
    );
    apply(&mut store, AuthCommand::Disable).unwrap();
    assert_eq!(
        store.apply(&Caller::Client(None), 79, &login).0,
        Err(AuthError::AuthNotEnabled)
    );
}

#[test]
fn tokens_resolve_to_their_user_and_a_common_name_is_used_without_one() {
    let store = enabled_store();
    let mut tokens = Tokens::new(60_000);
    tokens.assign("t.5".into(), "alice", 0);
    let by_token = Credentials {
        token: Some("t.5".into()),
        common_name: Some("bob".into()),
        signed: None,
    };
    let info = store.resolve(&by_token, &mut tokens, 10).unwrap().unwrap();
    assert_eq!(info.user, "alice");
    assert_eq!(info.revision, store.revision());
    let by_name = Credentials {
        token: None,
        common_name: Some("bob".into()),
        signed: None,
    };
    assert_eq!(
        store
            .resolve(&by_name, &mut tokens, 10)
            .unwrap()
            .unwrap()
            .user,
        "bob"
    );
    let bad = Credentials {
        token: Some("forged.9".into()),
        common_name: None,
        signed: None,
    };
    assert_eq!(
        store.resolve(&bad, &mut tokens, 10),
        Err(AuthError::InvalidAuthToken)
    );
    // A signed token names its user and the revision it was issued at: one from before an
    // auth change is refused as etcd refuses it.
    let signed = |revision| Credentials {
        signed: Some(AuthInfo {
            user: "alice".into(),
            revision,
        }),
        ..Credentials::default()
    };
    let current = store
        .resolve(&signed(store.revision()), &mut tokens, 10)
        .unwrap();
    assert_eq!(current.as_ref().map(|i| i.user.as_str()), Some("alice"));
    let stale = store
        .resolve(&signed(store.revision() - 1), &mut tokens, 10)
        .unwrap();
    assert_eq!(
        store.check_access(stale.as_ref(), Access::Read, b"k", b""),
        Err(AuthError::AuthOldRevision)
    );
    // With auth off, credentials are ignored.
    assert_eq!(
        AuthStore::default().resolve(&bad, &mut tokens, 10),
        Ok(None)
    );
}

#[test]
fn passwords_are_looked_up_only_for_users_who_have_one() {
    let mut store = enabled_store();
    let add = AuthCommand::UserAdd {
        name: "svc".into(),
        password_hash: None,
        no_password: true,
    };
    apply(&mut store, add).unwrap();
    assert_eq!(store.password_hash("svc"), Err(AuthError::NoPasswordUser));
    assert_eq!(store.password_hash("ghost"), Err(AuthError::AuthFailed));
    let (hash, revision) = store.password_hash("alice").unwrap();
    assert_eq!(hash, "$2b$04$hash");
    assert_eq!(revision, store.revision());
}

#[test]
fn error_messages_and_codes_are_etcds() {
    use crate::rpctypes::{GrpcCode, ToRpcError};
    let cases = [
        (
            AuthError::PermissionDenied,
            GrpcCode::PermissionDenied,
            "etcdserver: permission denied",
        ),
        (
            AuthError::InvalidAuthToken,
            GrpcCode::Unauthenticated,
            "etcdserver: invalid auth token",
        ),
        (
            AuthError::AuthOldRevision,
            GrpcCode::InvalidArgument,
            "etcdserver: revision of auth store is old",
        ),
        (
            AuthError::UserNotFound,
            GrpcCode::FailedPrecondition,
            "etcdserver: user name not found",
        ),
        (
            AuthError::AuthFailed,
            GrpcCode::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password",
        ),
        (
            AuthError::RootUserNotExist,
            GrpcCode::FailedPrecondition,
            "etcdserver: root user does not exist",
        ),
    ];
    for (error, code, message) in cases {
        assert_eq!(error.rpc_error().code(), code);
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn the_store_round_trips_through_the_snapshot_encoding() {
    let store = enabled_store();
    let bytes = bincode::serialize(&store).unwrap();
    let back: AuthStore = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back, store);
}
