//! How a history reads in a failure report: every request, response, event and watch in
//! one line of text, keys and values shown as text when they are, in hex otherwise.

use std::fmt;

use super::{
    Compare, CompareResult, CompareTarget, DeleteRange, Event, EventKind, KeyValue, Operation,
    Outcome, Put, Range, RangeResult, Request, Response, StoreError, Time, TxnOp, TxnOpResult,
    WatchRequest, WatchResponse, WatchResponseKind,
};

/// A key or value for humans: printable ASCII as is, other bytes escaped, quoted.
pub(crate) fn fmt_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

/// A simulated time for humans: seconds with nanoseconds.
pub(crate) fn fmt_time(t: Time) -> String {
    format!("{}.{:09}s", t / 1_000_000_000, t % 1_000_000_000)
}

fn fmt_range(key: &[u8], range_end: &[u8]) -> String {
    match range_end {
        [] => fmt_bytes(key),
        [0] => format!("[{}, ..)", fmt_bytes(key)),
        end => format!("[{}, {})", fmt_bytes(key), fmt_bytes(end)),
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} (create {}, mod {}, ver {}",
            fmt_bytes(&self.key),
            fmt_bytes(&self.value),
            self.create_revision,
            self.mod_revision,
            self.version
        )?;
        if self.lease != 0 {
            write!(f, ", lease {}", self.lease)?;
        }
        f.write_str(")")
    }
}

fn fmt_kvs(f: &mut fmt::Formatter<'_>, kvs: &[KeyValue]) -> fmt::Result {
    f.write_str("[")?;
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{kv}")?;
    }
    f.write_str("]")
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.range_end.is_empty() {
            write!(f, "get {}", fmt_bytes(&self.key))?;
        } else {
            write!(f, "range {}", fmt_range(&self.key, &self.range_end))?;
        }
        if self.revision > 0 {
            write!(f, " at rev {}", self.revision)?;
        }
        if self.limit > 0 {
            write!(f, " limit {}", self.limit)?;
        }
        if self.serializable {
            f.write_str(" serializable")?;
        }
        Ok(())
    }
}

impl fmt::Display for Put {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "put {}={}", fmt_bytes(&self.key), fmt_bytes(&self.value))?;
        if self.lease != 0 {
            write!(f, " lease {}", self.lease)?;
        }
        if self.prev_kv {
            f.write_str(" prev_kv")?;
        }
        Ok(())
    }
}

impl fmt::Display for DeleteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "delete {}", fmt_range(&self.key, &self.range_end))?;
        if self.prev_kv {
            f.write_str(" prev_kv")?;
        }
        Ok(())
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = fmt_range(&self.key, &self.range_end);
        let op = match self.result {
            CompareResult::Equal => "==",
            CompareResult::NotEqual => "!=",
            CompareResult::Greater => ">",
            CompareResult::Less => "<",
        };
        match &self.target {
            CompareTarget::Version(v) => write!(f, "version({key}) {op} {v}"),
            CompareTarget::CreateRevision(v) => write!(f, "create({key}) {op} {v}"),
            CompareTarget::ModRevision(v) => write!(f, "mod({key}) {op} {v}"),
            CompareTarget::Value(v) => write!(f, "value({key}) {op} {}", fmt_bytes(v)),
            CompareTarget::Lease(v) => write!(f, "lease({key}) {op} {v}"),
        }
    }
}

impl fmt::Display for TxnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnOp::Range(r) => write!(f, "{r}"),
            TxnOp::Put(p) => write!(f, "{p}"),
            TxnOp::DeleteRange(d) => write!(f, "{d}"),
        }
    }
}

fn fmt_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    f.write_str("[")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str("; ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_str("]")
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Put(p) => write!(f, "{p}"),
            Request::Range(r) => write!(f, "{r}"),
            Request::DeleteRange(d) => write!(f, "{d}"),
            Request::Txn(t) => {
                f.write_str("txn if ")?;
                fmt_list(f, &t.compare)?;
                f.write_str(" then ")?;
                fmt_list(f, &t.success)?;
                f.write_str(" else ")?;
                fmt_list(f, &t.failure)
            }
            Request::LeaseGrant { ttl, id } => {
                write!(f, "lease-grant ttl {ttl}")?;
                if *id != 0 {
                    write!(f, " id {id}")?;
                }
                Ok(())
            }
            Request::LeaseRevoke { id } => write!(f, "lease-revoke {id}"),
            Request::Compact { revision } => write!(f, "compact {revision}"),
        }
    }
}

impl fmt::Display for RangeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_kvs(f, &self.kvs)?;
        if self.count != self.kvs.len() as i64 {
            write!(f, " count {}", self.count)?;
        }
        if self.more {
            f.write_str(" more")?;
        }
        Ok(())
    }
}

impl fmt::Display for TxnOpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnOpResult::Range(r) => write!(f, "{r}"),
            TxnOpResult::Put { prev_kv: None } => f.write_str("put"),
            TxnOpResult::Put { prev_kv: Some(kv) } => write!(f, "put prev {kv}"),
            TxnOpResult::DeleteRange { deleted, prev_kvs } => {
                write!(f, "deleted {deleted}")?;
                if !prev_kvs.is_empty() {
                    f.write_str(" prev ")?;
                    fmt_kvs(f, prev_kvs)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ok rev {}", self.revision())?;
        match self {
            Response::Put { prev_kv, .. } => {
                if let Some(kv) = prev_kv {
                    write!(f, " prev {kv}")?;
                }
                Ok(())
            }
            Response::Range { result, .. } => write!(f, " {result}"),
            Response::DeleteRange {
                deleted, prev_kvs, ..
            } => {
                write!(f, " deleted {deleted}")?;
                if !prev_kvs.is_empty() {
                    f.write_str(" prev ")?;
                    fmt_kvs(f, prev_kvs)?;
                }
                Ok(())
            }
            Response::Txn {
                succeeded, results, ..
            } => {
                f.write_str(if *succeeded {
                    " succeeded "
                } else {
                    " failed "
                })?;
                fmt_list(f, results)
            }
            Response::LeaseGrant { id, ttl, .. } => write!(f, " id {id} ttl {ttl}"),
            Response::LeaseRevoke { .. } | Response::Compact { .. } => Ok(()),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreError::Compacted => "mvcc: required revision has been compacted",
            StoreError::FutureRev => "mvcc: required revision is a future revision",
            StoreError::LeaseNotFound => "requested lease not found",
            StoreError::LeaseExists => "lease already exists",
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(r) => write!(f, "{r}"),
            Outcome::Error(e) => write!(f, "error: {e}"),
            Outcome::Failed(why) => write!(f, "failed (no effect): {why}"),
            Outcome::Indeterminate(why) => write!(f, "unknown: {why}"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} ", self.client)?;
        if let Some(m) = self.member {
            write!(f, "(member {m}) ")?;
        }
        match self.complete {
            Some(c) => write!(f, "[{}, {}]", fmt_time(self.invoke), fmt_time(c))?,
            None => write!(f, "[{}, -]", fmt_time(self.invoke))?,
        }
        write!(f, " {} -> {}", self.request, self.outcome)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventKind::Put => write!(f, "PUT {}", self.kv)?,
            EventKind::Delete => write!(
                f,
                "DELETE {} at rev {}",
                fmt_bytes(&self.kv.key),
                self.kv.mod_revision
            )?,
        }
        if let Some(prev) = &self.prev_kv {
            write!(f, " prev {prev}")?;
        }
        Ok(())
    }
}

impl fmt::Display for WatchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "watch {}", fmt_range(&self.key, &self.range_end))?;
        if self.start_revision > 0 {
            write!(f, " from rev {}", self.start_revision)?;
        }
        if self.prev_kv {
            f.write_str(" prev_kv")?;
        }
        if self.filters.no_put {
            f.write_str(" no_put")?;
        }
        if self.filters.no_delete {
            f.write_str(" no_delete")?;
        }
        if self.progress_notify {
            f.write_str(" progress_notify")?;
        }
        Ok(())
    }
}

impl fmt::Display for WatchResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {} rev {}: ",
            fmt_time(self.received),
            self.header_revision
        )?;
        match &self.kind {
            WatchResponseKind::Created => f.write_str("created"),
            WatchResponseKind::Events(events) => fmt_list(f, events),
            WatchResponseKind::Progress => f.write_str("progress"),
            WatchResponseKind::Canceled {
                compact_revision,
                reason,
            } => write!(
                f,
                "canceled (compact_revision {compact_revision}): {reason}"
            ),
        }
    }
}
