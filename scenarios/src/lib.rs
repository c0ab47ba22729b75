//! Named fault scenarios run as `cargo test` under `--cfg madsim` (arrive with the simulator issue).
