//! Range reads, with etcd's options and their exact interplay (`apply.go` Range): the
//! revision checks, `limit` with `more`, `count` taken before the limit and before the
//! min/max revision filters, sorting (ASCEND by default when the target is not KEY),
//! `keys_only` and `count_only`.

use std::cmp::Ordering;

use super::error::Error;
use super::request::{
    KeyValue, RangeRequest, RangeResponse, ResponseHeader, SortOrder, SortTarget,
};
use super::revision::KeyRange;
use super::store::Store;
use super::validate::check_range;

impl Store {
    /// A Range at the current revision (or the request's `revision`).
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Error> {
        self.healthy()?;
        check_range(request)?;
        let rev = self.read_revision(request.revision, self.current_revision())?;
        let response = self.range_at(request, rev, self.current_revision());
        // A read the engine failed part-way through is not an answer.
        self.healthy()?;
        Ok(response)
    }

    /// The revision a read asking for `requested` sees when the newest revision is
    /// `view_rev`; etcd's checks and order.
    pub(crate) fn read_revision(&self, requested: i64, view_rev: i64) -> Result<i64, Error> {
        if requested > view_rev {
            return Err(Error::FutureRev);
        }
        let rev = if requested <= 0 { view_rev } else { requested };
        if rev < self.compact_revision() {
            return Err(Error::Compacted);
        }
        Ok(rev)
    }

    /// The live versions in `range` at `rev` (without their values, see
    /// [`Store::load_value`]), calling `visit` for each in key order until it returns false.
    pub(crate) fn for_each_live(
        &self,
        range: &KeyRange,
        rev: i64,
        mut visit: impl FnMut(&bytes::Bytes, &super::key_index::Entry) -> bool,
    ) {
        let Some((_, end)) = range.bounds() else {
            return;
        };
        self.for_each_live_at(&range.start, end, rev, &mut visit);
    }

    /// A Range at the already checked revision `rev`; the header carries `header_rev`
    /// (etcd reports the store's revision, not the one read).
    pub(crate) fn range_at(
        &self,
        request: &RangeRequest,
        rev: i64,
        header_rev: i64,
    ) -> RangeResponse {
        let range = KeyRange::new(&request.key, &request.range_end);
        let fetch_limit = fetch_limit(request);
        // Values are read only when answered or sorted on.
        let needs_values = !request.keys_only || request.sort_target == SortTarget::Value;
        let mut kvs = Vec::new();
        let mut count: i64 = 0;
        self.for_each_live(&range, rev, |key, entry| {
            count += 1;
            if !request.count_only && kvs.len() < fetch_limit {
                let mut entry = entry.clone();
                if needs_values {
                    self.load_value(&mut entry);
                }
                kvs.push(entry.to_kv(key));
            }
            true
        });
        prune(&mut kvs, request);
        sort(&mut kvs, request);
        let mut more = false;
        if request.limit > 0 && kvs.len() as i64 > request.limit {
            kvs.truncate(request.limit as usize);
            more = true;
        }
        if request.keys_only {
            for kv in &mut kvs {
                kv.value = bytes::Bytes::new();
            }
        }
        RangeResponse {
            header: ResponseHeader::at(header_rev),
            kvs,
            more,
            count,
        }
    }
}

/// How many versions to collect: everything when sorting or filtering (the limit applies
/// afterwards), else one more than the limit to learn `more`.
fn fetch_limit(request: &RangeRequest) -> usize {
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    // etcd sorts ascending when only a non-key target is given, so that needs everything too.
    let sorted = request.sort_order != SortOrder::None || request.sort_target != SortTarget::Key;
    if sorted || filtered || request.limit <= 0 {
        return usize::MAX;
    }
    usize::try_from(request.limit)
        .unwrap_or(usize::MAX)
        .saturating_add(1)
}

fn prune(kvs: &mut Vec<KeyValue>, r: &RangeRequest) {
    if r.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
    }
    if r.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
    }
    if r.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
    }
    if r.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
    }
}

/// Sorts as etcd does, except that ties keep key order (etcd's sort is unstable, keel's
/// is deterministic): ASCEND and DESCEND order by the target, ties by ascending key.
fn sort(kvs: &mut [KeyValue], r: &RangeRequest) {
    let order = match (r.sort_order, r.sort_target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let by_target = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match r.sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| by_target(b, a)),
        _ => kvs.sort_by(by_target),
    }
}
