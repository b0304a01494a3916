//! Plan (pure): which members to unban, in which calls.
//!
//! The difference between the desired set and the recorded set, sorted,
//! cut into batches of at most 20: the fewest calls that cover it, in an
//! order that only depends on the inputs.

use std::collections::BTreeSet;

use crate::im::MAX_MEMBERS_PER_CALL;

/// What one pass over a policy must do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Each batch is one `unban_group_member` call. (Recorded members no
    /// longer desired are not the plan's business: `fold::prepare` drops
    /// them from the record before planning; they are never banned again.)
    pub batches: Vec<Vec<String>>,
}

impl Plan {
    pub fn members_to_unban(&self) -> usize {
        self.batches.iter().map(Vec::len).sum()
    }
}

/// Plans the calls that make `recorded` cover `desired`.
pub fn plan(desired: &[String], recorded: &[String]) -> Plan {
    let desired: BTreeSet<&String> = desired.iter().collect();
    let recorded: BTreeSet<&String> = recorded.iter().collect();
    let missing: Vec<String> = desired.difference(&recorded).map(|m| (*m).clone()).collect();
    Plan { batches: missing.chunks(MAX_MEMBERS_PER_CALL).map(<[String]>::to_vec).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:04}")).collect()
    }

    #[test]
    fn batch_of_21_members_is_split_into_20_and_1() {
        let plan = plan(&names("m", 21), &[]);
        assert_eq!(plan.batches.iter().map(Vec::len).collect::<Vec<_>>(), [20, 1]);
    }

    #[test]
    fn the_plan_counts_the_members_it_will_unban() {
        assert_eq!(plan(&names("m", 45), &names("m", 3)).members_to_unban(), 42);
        assert_eq!(plan(&names("m", 3), &names("m", 3)).members_to_unban(), 0);
    }

    #[test]
    fn members_already_recorded_are_not_called_again() {
        let plan = plan(&names("m", 5), &names("m", 3));
        assert_eq!(plan.batches, vec![vec!["m0003".to_string(), "m0004".to_string()]]);
    }

    #[test]
    fn a_member_removed_from_the_spec_is_not_called() {
        let plan = plan(&names("m", 2), &names("m", 3));
        assert!(plan.batches.is_empty());
    }

    proptest! {
        /// Never more than 20 a call, the fewest calls, no member lost or
        /// doubled, nothing recorded is called again, deterministic.
        #[test]
        fn planner_invariants(
            desired in proptest::collection::hash_set("[a-z]{1,4}", 0..300),
            recorded in proptest::collection::hash_set("[a-z]{1,4}", 0..300),
        ) {
            let desired: Vec<String> = desired.into_iter().collect();
            let recorded: Vec<String> = recorded.into_iter().collect();
            let result = plan(&desired, &recorded);

            let missing: BTreeSet<&String> = desired.iter().filter(|m| !recorded.contains(m)).collect();
            prop_assert!(result.batches.iter().all(|b| !b.is_empty() && b.len() <= 20));
            prop_assert_eq!(result.batches.len(), missing.len().div_ceil(20));
            let planned: Vec<&String> = result.batches.iter().flatten().collect();
            let planned_set: BTreeSet<&String> = planned.iter().copied().collect();
            prop_assert_eq!(planned.len(), planned_set.len(), "a member is doubled");
            prop_assert_eq!(planned_set, missing);

            let mut shuffled_desired = desired.clone();
            shuffled_desired.reverse();
            let mut shuffled_recorded = recorded.clone();
            shuffled_recorded.reverse();
            prop_assert_eq!(plan(&shuffled_desired, &shuffled_recorded), result);
        }
    }
}
