#![allow(dead_code)]

use bytes::Bytes;
use keel_core::mvcc::*;

/// The keys of `table`'s rows in `[from, to)`, in order.
pub fn row_keys(
    engine: &dyn Read,
    table: Table,
    from: std::ops::Bound<&[u8]>,
    to: std::ops::Bound<&[u8]>,
) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    engine
        .scan(table, from, to, false, &mut |key, _| {
            keys.push(key.to_vec());
            true
        })
        .expect("scan");
    keys
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A store with a Raft index and a clock the test advances.
pub struct Harness {
    pub store: Store,
    pub index: u64,
    pub now_ms: u64,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(StoreConfig::default())
    }

    /// The store's index rows reach its engine at every commit (see [`Harness::compact`]).
    pub fn with_config(config: StoreConfig) -> Self {
        let config = StoreConfig {
            index_checkpoint_bytes: 0,
            ..config
        };
        Harness {
            store: Store::new(config),
            index: 0,
            now_ms: 0,
        }
    }

    pub fn apply(&mut self, command: Command) -> Applied {
        self.index += 1;
        self.store.apply(self.index, self.now_ms, &command)
    }

    pub fn put(&mut self, key: &str, value: &str) -> PutResponse {
        self.put_req(PutRequest {
            key: b(key),
            value: b(value),
            ..Default::default()
        })
        .unwrap()
    }

    pub fn put_req(&mut self, put: PutRequest) -> Result<PutResponse, Error> {
        match self.apply(Command::Put(put)).result? {
            Response::Put(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn delete(&mut self, key: &str, range_end: &str) -> DeleteRangeResponse {
        self.delete_req(DeleteRangeRequest {
            key: b(key),
            range_end: b(range_end),
            prev_kv: true,
        })
        .unwrap()
    }

    pub fn delete_req(&mut self, d: DeleteRangeRequest) -> Result<DeleteRangeResponse, Error> {
        match self.apply(Command::DeleteRange(d)).result? {
            Response::DeleteRange(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn txn(&mut self, txn: TxnRequest) -> Result<TxnResponse, Error> {
        match self.apply(Command::Txn(txn)).result? {
            Response::Txn(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Compacts, then commits the store (an index checkpoint, which physical compaction
    /// waits for) and runs one bounded physical step, as a server's next apply would.
    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse, Error> {
        let applied = self.apply(Command::Compaction(CompactionRequest {
            revision,
            physical: false,
        }));
        self.store.commit(false).expect("commit");
        let batch = self.store.config().compaction_batch_revisions;
        self.store.compaction_step(batch);
        match applied.result? {
            Response::Compaction(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn grant(&mut self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, Error> {
        match self
            .apply(Command::LeaseGrant(LeaseGrantRequest { ttl, id }))
            .result?
        {
            Response::LeaseGrant(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        match self
            .apply(Command::LeaseRevoke(LeaseRevokeRequest { id }))
            .result?
        {
            Response::LeaseRevoke(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.store.range(&get(key)).unwrap().kvs.into_iter().next()
    }

    pub fn rev(&self) -> i64 {
        self.store.current_revision()
    }
}

pub fn get(key: &str) -> RangeRequest {
    RangeRequest {
        key: b(key),
        ..Default::default()
    }
}

pub fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(key),
        range_end: b(end),
        ..Default::default()
    }
}

pub fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: b(key),
        value: b(value),
        ..Default::default()
    })
}

pub fn delete_op(key: &str, end: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        key: b(key),
        range_end: b(end),
        prev_kv: false,
    })
}

pub fn range_op(key: &str, end: &str) -> RequestOp {
    RequestOp::Range(range(key, end))
}

pub fn cmp(key: &str, target: CompareTarget, result: CompareResult, union: TargetUnion) -> Compare {
    Compare {
        result,
        target,
        key: b(key),
        range_end: Bytes::new(),
        target_union: Some(union),
    }
}

pub fn keys_of(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}
