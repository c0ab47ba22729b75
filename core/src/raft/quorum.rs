//! Majority arithmetic over the voters.

use std::collections::BTreeSet;

use super::entry::{Index, NodeId};

/// The highest value that a majority of `voters` has reached, where `value_of` gives each
/// voter's value. `scratch` is reused to avoid allocating on the commit path.
pub(crate) fn majority_value(
    voters: &BTreeSet<NodeId>,
    scratch: &mut Vec<Index>,
    mut value_of: impl FnMut(NodeId) -> Index,
) -> Index {
    if voters.is_empty() {
        return 0;
    }
    scratch.clear();
    scratch.extend(voters.iter().map(|&id| value_of(id)));
    scratch.sort_unstable_by(|a, b| b.cmp(a));
    scratch[voters.len() / 2]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tallies `votes` (granted or not, by voter) against `voters`.
pub(crate) fn tally(
    voters: &BTreeSet<NodeId>,
    votes: impl Iterator<Item = (NodeId, bool)>,
) -> VoteResult {
    let quorum = voters.len() / 2 + 1;
    let (mut granted, mut rejected) = (0usize, 0usize);
    for (id, vote) in votes {
        if voters.contains(&id) {
            if vote {
                granted += 1;
            } else {
                rejected += 1;
            }
        }
    }
    if granted >= quorum {
        VoteResult::Won
    } else if voters.len() - rejected < quorum {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_value_is_the_median_from_the_top() {
        let voters: BTreeSet<NodeId> = [1, 2, 3, 4, 5].into();
        let matches = [0, 10, 7, 3, 9, 1];
        let mut scratch = Vec::new();
        assert_eq!(
            majority_value(&voters, &mut scratch, |id| matches[id as usize]),
            7
        );
        // Of four voters holding 10, 7, 3 and 9, three hold at least 7.
        let four: BTreeSet<NodeId> = [1, 2, 3, 4].into();
        assert_eq!(
            majority_value(&four, &mut scratch, |id| matches[id as usize]),
            7
        );
        let two: BTreeSet<NodeId> = [1, 3].into();
        assert_eq!(
            majority_value(&two, &mut scratch, |id| matches[id as usize]),
            3,
            "of two voters holding 10 and 3, both must hold it"
        );
    }

    #[test]
    fn tally_counts_only_voters() {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        assert_eq!(
            tally(&voters, [(1, true), (9, true)].into_iter()),
            VoteResult::Pending
        );
        assert_eq!(
            tally(&voters, [(1, true), (2, true)].into_iter()),
            VoteResult::Won
        );
        assert_eq!(
            tally(&voters, [(1, true), (2, false), (3, false)].into_iter()),
            VoteResult::Lost
        );
    }
}
