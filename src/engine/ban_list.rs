//! What a group's ban list says about a policy's members (pure): which
//! desired members not yet recorded are still banned (the next pass
//! unbans them), which desired members are not banned, and which recorded
//! members were banned again (drift: only a drift check brings them back,
//! since a pass calls for unrecorded members only). `diff` reports all
//! three; the controller's drift check acts on the last.
//!
//! The list is fed page by page and only the members the comparison
//! reports are kept, so a group with 100,000 banned members costs the
//! policy's own sets and one page, never the whole list.

use std::collections::BTreeSet;

/// A comparison in progress: feed it every page with [`BanComparison::see_page`].
#[derive(Debug)]
pub struct BanComparison<'a> {
    desired: BTreeSet<&'a str>,
    recorded: BTreeSet<&'a str>,
    banned_desired: BTreeSet<String>,
    banned_recorded: BTreeSet<String>,
    banned_total: u64,
}

/// The comparison's result; each list sorted and free of duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberDiff {
    /// Desired members, not recorded as unbanned, on the ban list: what
    /// the next pass unbans.
    pub still_banned: Vec<String>,
    /// Desired members not on the ban list: nothing to do.
    pub not_banned: Vec<String>,
    /// Members recorded as unbanned that are on the ban list again (drift).
    pub banned_again: Vec<String>,
    /// Entries the ban list had in all (for the report; not kept).
    pub banned_total: u64,
}

impl MemberDiff {
    /// True when the group's ban list disagrees with the policy: a desired
    /// member is banned, or a recorded one is banned again.
    pub fn has_differences(&self) -> bool {
        !self.still_banned.is_empty() || !self.banned_again.is_empty()
    }
}

impl<'a> BanComparison<'a> {
    pub fn new(desired: &'a [String], recorded: &'a [String]) -> Self {
        Self {
            desired: desired.iter().map(String::as_str).collect(),
            recorded: recorded.iter().map(String::as_str).collect(),
            banned_desired: BTreeSet::new(),
            banned_recorded: BTreeSet::new(),
            banned_total: 0,
        }
    }

    /// Takes in one page of banned member accounts.
    pub fn see_page(&mut self, banned: impl IntoIterator<Item = String>) {
        for member in banned {
            self.banned_total += 1;
            let (desired, recorded) = (self.desired.contains(member.as_str()), self.recorded.contains(member.as_str()));
            if desired && recorded {
                self.banned_desired.insert(member.clone());
                self.banned_recorded.insert(member);
            } else if desired {
                self.banned_desired.insert(member);
            } else if recorded {
                self.banned_recorded.insert(member);
            }
        }
    }

    /// Members kept so far: only those the policy names and the list has.
    pub fn held(&self) -> usize {
        self.banned_desired.len() + self.banned_recorded.len()
    }

    pub fn finish(self) -> MemberDiff {
        let not_banned = self
            .desired
            .iter()
            .filter(|member| !self.banned_desired.contains(**member))
            .map(|m| m.to_string())
            .collect();
        MemberDiff {
            still_banned: self.banned_desired.iter().filter(|m| !self.recorded.contains(m.as_str())).cloned().collect(),
            not_banned,
            banned_again: self.banned_recorded.into_iter().collect(),
            banned_total: self.banned_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_member_lands_where_the_list_puts_it() {
        let (desired, recorded) = (strings(&["a", "b", "c"]), strings(&["b", "c", "x"]));
        let mut comparison = BanComparison::new(&desired, &recorded);
        comparison.see_page(strings(&["z", "a"]));
        comparison.see_page(strings(&["b", "x"]));
        let diff = comparison.finish();
        assert_eq!(diff.still_banned, strings(&["a"]), "b is recorded: only a drift check unbans it again");
        assert_eq!(diff.not_banned, strings(&["c"]));
        assert_eq!(diff.banned_again, strings(&["b", "x"]));
        assert_eq!(diff.banned_total, 4);
        assert!(diff.has_differences());
    }

    #[test]
    fn an_empty_ban_list_means_no_difference() {
        let desired = strings(&["a"]);
        let diff = BanComparison::new(&desired, &desired).finish();
        assert_eq!(diff.not_banned, desired);
        assert!(!diff.has_differences());
    }

    #[test]
    fn a_long_list_is_never_held_only_what_the_policy_names() {
        let (desired, recorded) = (strings(&["m5", "zz"]), strings(&["m7"]));
        let mut comparison = BanComparison::new(&desired, &recorded);
        for page in 0..1000 {
            comparison.see_page((0..100).map(|i| format!("m{}", page * 100 + i)));
            assert!(comparison.held() <= 2, "page {page}: {} held", comparison.held());
        }
        let diff = comparison.finish();
        assert_eq!(
            (diff.banned_total, diff.still_banned, diff.banned_again),
            (100_000, strings(&["m5"]), strings(&["m7"]))
        );
    }

    proptest! {
        /// However the list is paged and whatever it holds, the result is
        /// the set algebra of the whole list, and it keeps nothing the
        /// policy does not name.
        #[test]
        fn pages_add_up_to_the_set_algebra(
            desired in proptest::collection::btree_set("[a-f]", 0..6),
            recorded in proptest::collection::btree_set("[a-f]", 0..6),
            banned in proptest::collection::btree_set("[a-j]", 0..10),
            page in 1usize..5,
        ) {
            let (desired_list, recorded_list): (Vec<String>, Vec<String>) =
                (desired.iter().cloned().collect(), recorded.iter().cloned().collect());
            let banned_list: Vec<String> = banned.iter().cloned().collect();
            let mut comparison = BanComparison::new(&desired_list, &recorded_list);
            for chunk in banned_list.chunks(page) {
                comparison.see_page(chunk.to_vec());
            }
            let diff = comparison.finish();
            let still: Vec<String> =
                desired.intersection(&banned).filter(|m| !recorded.contains(*m)).cloned().collect();
            let not: Vec<String> = desired.difference(&banned).cloned().collect();
            let again: Vec<String> = recorded.intersection(&banned).cloned().collect();
            prop_assert_eq!(&diff.still_banned, &still);
            prop_assert_eq!(&diff.not_banned, &not);
            prop_assert_eq!(&diff.banned_again, &again);
            prop_assert_eq!(diff.banned_total, banned.len() as u64);
            prop_assert_eq!(diff.has_differences(), !still.is_empty() || !again.is_empty());
        }
    }
}
