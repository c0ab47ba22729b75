//! Durable storage for keel: WAL, snapshots and hard state behind a `Disk` trait (arrives with the storage issue).
