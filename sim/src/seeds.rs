//! Which seeds a simulation test runs, from the environment:
//! `KEEL_SIM_SEED=S` runs exactly `S`; otherwise `KEEL_SIM_SEEDS=N` seeds (default: the
//! test's own count, sized for CI) starting at `KEEL_SIM_FIRST_SEED` (default 0).

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("KEEL_SIM_SEED") {
        return vec![seed];
    }
    let count = env_u64("KEEL_SIM_SEEDS").unwrap_or(default_count);
    let first = env_u64("KEEL_SIM_FIRST_SEED").unwrap_or(0);
    (first..first.saturating_add(count)).collect()
}
