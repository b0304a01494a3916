//! `get`'s table (pure): the columns, one row per policy, ages as kubectl
//! prints them, and the columns aligned.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::{GroupBanPolicy, condition_types};

/// Which columns `get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `-A`: the namespace comes first.
    pub namespace: bool,
    /// `-o wide`: pending, failed, suspended and the last sync as well.
    pub wide: bool,
}

/// The header row.
pub fn header(layout: Layout) -> Vec<String> {
    let mut names = Vec::new();
    if layout.namespace {
        names.push("NAMESPACE");
    }
    names.extend(["NAME", "GROUP", "DESIRED", "UNBANNED", "ERRORCODE", "READY"]);
    if layout.wide {
        names.extend(["PENDING", "FAILED", "SUSPENDED", "LAST SYNC"]);
    }
    names.extend(["AGE", "MESSAGE"]);
    names.into_iter().map(String::from).collect()
}

/// One policy's row, in the header's order. A policy the operator has not
/// looked at yet reads READY Unknown.
pub fn row(policy: &GroupBanPolicy, layout: Layout, now: Timestamp) -> Vec<String> {
    let status = policy.status.clone().unwrap_or_default();
    let summary = status.summary.unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == condition_types::READY);
    let (ready_status, message) = match ready {
        Some(c) => (c.status.clone(), c.message.clone()),
        None => ("Unknown".to_string(), "not reconciled yet".to_string()),
    };
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    let mut cells = Vec::new();
    if layout.namespace {
        cells.push(or_dash(policy.metadata.namespace.clone()));
    }
    cells.extend([
        or_dash(policy.metadata.name.clone()),
        policy.spec.group_id.clone(),
        policy.spec.unbanned_members.len().to_string(),
        summary.unbanned.to_string(),
        or_dash(status.last_error_code.map(|c| c.to_string())),
        ready_status,
    ]);
    if layout.wide {
        cells.extend([
            summary.pending.to_string(),
            summary.failed.to_string(),
            (policy.spec.suspend == Some(true)).to_string(),
            or_dash(status.last_sync_time.map(|t| age(now, t.0))),
        ]);
    }
    cells.push(or_dash(policy.metadata.creation_timestamp.clone().map(|t| age(now, t.0))));
    cells.push(one_line(&message));
    cells
}

/// How long ago `then` was, as kubectl prints ages: "45s", "5m30s", "3h",
/// "2d5h", "400d".
pub fn age(now: Timestamp, then: Timestamp) -> String {
    let seconds = Duration::try_from(now.duration_since(then)).map_or(0, |d| d.as_secs());
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86400);
    match seconds {
        0..120 => format!("{seconds}s"),
        120..600 if seconds % 60 != 0 => format!("{minutes}m{}s", seconds % 60),
        120..10_800 => format!("{minutes}m"),
        10_800..28_800 if minutes % 60 != 0 => format!("{hours}h{}m", minutes % 60),
        10_800..172_800 => format!("{hours}h"),
        172_800..691_200 if hours % 24 != 0 => format!("{days}d{}h", hours % 24),
        _ => format!("{days}d"),
    }
}

/// A message on one line: a cell must not break the table.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The rows aligned in columns three spaces apart, as kubectl prints them;
/// the last column is not padded.
pub fn render(rows: &[Vec<String>]) -> String {
    let widths = widths(rows);
    rows.iter().map(|row| line(row, &widths)).collect()
}

/// Each column's width: its longest cell.
pub fn widths(rows: &[Vec<String>]) -> Vec<usize> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    (0..columns).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0)).collect()
}

/// One row in columns of `widths`, with its newline; a longer cell pushes
/// the rest right.
pub fn line(row: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in row.iter().enumerate() {
        line.push_str(cell);
        if i + 1 < row.len() {
            let width = widths.get(i).copied().unwrap_or(0);
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count()) + 3));
        }
    }
    format!("{}\n", line.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (10_799, "179m"),
            (10_800, "3h"),
            (12_600, "3h30m"),
            (28_800, "8h"),
            (172_800, "2d"),
            (190_800, "2d5h"),
            (400 * 86_400, "400d"),
        ];
        for (seconds, shown) in cases {
            assert_eq!(age(at(1_000_000_000), at(1_000_000_000 - seconds)), shown, "{seconds}s");
        }
        assert_eq!(age(at(10), at(20)), "0s", "a clock ahead of ours is no negative age");
    }

    #[test]
    fn a_fresh_policy_reads_ready_unknown_and_wide_adds_four_columns() {
        let policy: GroupBanPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy",
            "metadata": {"name": "room", "namespace": "team-a", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"groupId": "@TGS#a", "unbannedMembers": ["x", "y"]}
        }))
        .unwrap();
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let narrow = Layout { namespace: false, wide: false };
        assert_eq!(
            row(&policy, narrow, now),
            ["room", "@TGS#a", "2", "0", "-", "Unknown", "60s", "not reconciled yet"]
        );
        let wide = Layout { namespace: true, wide: true };
        assert_eq!(header(wide).len(), row(&policy, wide, now).len());
        assert_eq!(header(wide).len(), header(narrow).len() + 5);
    }

    #[test]
    fn a_longer_cell_pushes_the_rest_right() {
        let widths = [4, 2];
        assert_eq!(line(&["ab".into(), "c".into(), "end".into()], &widths), "ab     c    end\n");
        assert_eq!(line(&["abcdef".into(), "c".into(), "end".into()], &widths), "abcdef   c    end\n");
    }

    proptest! {
        /// Every column starts at the same character in every line.
        #[test]
        fn columns_line_up(cells in proptest::collection::vec(proptest::collection::vec("[a-z]{1,9}", 3), 1..6)) {
            let text = render(&cells);
            // Where each word (a cell) starts in each line.
            let starts: Vec<Vec<usize>> = text.lines().map(|line| {
                let bytes = line.as_bytes();
                (0..bytes.len()).filter(|&i| bytes[i] != b' ' && (i == 0 || bytes[i - 1] == b' ')).collect()
            }).collect();
            for column in 0..3 {
                prop_assert!(starts.windows(2).all(|w| w[0][column] == w[1][column]), "{}", text);
            }
        }
    }
}
