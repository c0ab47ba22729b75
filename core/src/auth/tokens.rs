//! etcd's "simple" tokens: `<random prefix>.<raft index>`, handed out when an `Authenticate`
//! entry applies, on every member alike (so a token works on any member once it has applied
//! that entry). They are kept in memory only, never in a snapshot: a member that restarts or
//! installs a snapshot forgets them, and clients authenticate again, as with etcd. A token
//! expires after `ttl_ms` without use; each use starts its TTL again.

use std::collections::BTreeMap;

/// Tokens held at most; past it the oldest to expire is dropped (its client authenticates
/// again). Bounds memory against a client that authenticates in a loop.
pub const MAX_TOKENS: usize = 1 << 20;

#[derive(Clone, Debug)]
struct Held {
    user: String,
    expires_ms: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Tokens {
    ttl_ms: u64,
    held: BTreeMap<String, Held>,
}

impl Tokens {
    pub fn new(ttl_ms: u64) -> Tokens {
        Tokens {
            ttl_ms,
            held: BTreeMap::new(),
        }
    }

    /// The token an `Authenticate` entry at `index` gives, from the prefix its proposer chose.
    pub fn token_for(prefix: &str, index: u64) -> String {
        format!("{prefix}.{index}")
    }

    /// The raft index a token was issued at, if it looks like a simple token.
    pub fn index_of(token: &str) -> Option<u64> {
        let (_, index) = token.split_once('.')?;
        index.parse().ok()
    }

    pub fn assign(&mut self, token: String, user: &str, now_ms: u64) {
        if self.held.len() >= MAX_TOKENS {
            self.drop_soonest_to_expire();
        }
        let held = Held {
            user: user.to_string(),
            expires_ms: now_ms.saturating_add(self.ttl_ms),
        };
        self.held.insert(token, held);
    }

    fn drop_soonest_to_expire(&mut self) {
        let soonest = self
            .held
            .iter()
            .min_by_key(|(_, held)| held.expires_ms)
            .map(|(token, _)| token.clone());
        if let Some(token) = soonest {
            self.held.remove(&token);
        }
    }

    /// The user of a live token, starting its TTL again.
    pub fn use_token(&mut self, token: &str, now_ms: u64) -> Option<String> {
        let held = self.held.get_mut(token)?;
        if held.expires_ms <= now_ms {
            self.held.remove(token);
            return None;
        }
        held.expires_ms = now_ms.saturating_add(self.ttl_ms);
        Some(held.user.clone())
    }

    /// Forgets `user`'s tokens (deleted, or given a new password).
    pub fn invalidate_user(&mut self, user: &str) {
        self.held.retain(|_, held| held.user != user);
    }

    pub fn clear(&mut self) {
        self.held.clear();
    }

    /// Forgets tokens that expired by `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        self.held.retain(|_, held| held.expires_ms > now_ms);
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_index_and_expires_after_its_ttl_without_use() {
        let mut tokens = Tokens::new(1_000);
        let token = Tokens::token_for("abc", 42);
        assert_eq!(token, "abc.42");
        assert_eq!(Tokens::index_of(&token), Some(42));
        tokens.assign(token.clone(), "alice", 0);
        assert_eq!(tokens.use_token(&token, 900).as_deref(), Some("alice"));
        // Used at 900: good until 1900.
        assert_eq!(tokens.use_token(&token, 1_800).as_deref(), Some("alice"));
        assert_eq!(tokens.use_token(&token, 2_800), None);
        assert!(tokens.is_empty());
    }

    #[test]
    fn invalidating_a_user_drops_only_their_tokens() {
        let mut tokens = Tokens::new(1_000);
        tokens.assign("a.1".into(), "alice", 0);
        tokens.assign("b.2".into(), "bob", 0);
        tokens.invalidate_user("alice");
        assert_eq!(tokens.use_token("a.1", 1), None);
        assert_eq!(tokens.use_token("b.2", 1).as_deref(), Some("bob"));
        tokens.expire(5_000);
        assert!(tokens.is_empty());
    }

    #[test]
    fn unknown_or_malformed_tokens_resolve_to_nobody() {
        let mut tokens = Tokens::new(1_000);
        assert_eq!(tokens.use_token("nope", 0), None);
        assert_eq!(Tokens::index_of("nope"), None);
        assert_eq!(Tokens::index_of("x.y"), None);
    }
}
