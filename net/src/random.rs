//! Randomness the server needs (Raft's seed, request ids, password salts, auth token
//! prefixes): the operating system's
//! in real mode, the simulator's seeded generator under madsim so that a seed replays.

const TOKEN_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// etcd's simple tokens start with 16 random letters.
const TOKEN_PREFIX_LETTERS: usize = 16;

/// Random bits that must differ between runs (election timeouts, request ids).
pub fn u64() -> u64 {
    let mut bytes = [0u8; 8];
    fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

pub fn fill(bytes: &mut [u8]) {
    #[cfg(not(madsim))]
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes);
    #[cfg(madsim)]
    madsim::rand::RngCore::fill_bytes(&mut madsim::rand::thread_rng(), bytes);
}

/// The random part of an auth token (etcd's simple token prefix).
pub fn token_prefix() -> String {
    let mut bytes = [0u8; TOKEN_PREFIX_LETTERS];
    fill(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(TOKEN_LETTERS[usize::from(*b) % TOKEN_LETTERS.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_prefixes_are_letters_and_differ() {
        let a = super::token_prefix();
        let b = super::token_prefix();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_alphabetic()));
        assert_ne!(a, b);
    }
}
