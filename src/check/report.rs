//! `check`'s lines (pure): what each check found, printed one a line.

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Not applicable, or not reachable from here (says why).
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub outcome: Outcome,
    /// What was checked: "kubernetes", "crd", "permission", ...
    pub check: &'static str,
    pub detail: String,
}

impl Line {
    pub fn pass(check: &'static str, detail: impl Into<String>) -> Self {
        Self { outcome: Outcome::Pass, check, detail: detail.into() }
    }
    pub fn fail(check: &'static str, detail: impl Into<String>) -> Self {
        Self { outcome: Outcome::Fail, check, detail: detail.into() }
    }
    pub fn skip(check: &'static str, detail: impl Into<String>) -> Self {
        Self { outcome: Outcome::Skip, check, detail: detail.into() }
    }
}

/// The lines as printed: `[ok]`, `[FAIL]` or `[skip]`, the check, what it
/// found.
pub fn render(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|line| {
            let mark = match line.outcome {
                Outcome::Pass => "[ok]  ",
                Outcome::Fail => "[FAIL]",
                Outcome::Skip => "[skip]",
            };
            format!("{mark} {}: {}\n", line.check, line.detail)
        })
        .collect()
}

/// True when no line failed (skips pass).
pub fn all_passed(lines: &[Line]) -> bool {
    lines.iter().all(|line| line.outcome != Outcome::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_anywhere_fails_and_skips_do_not() {
        let lines = [Line::pass("crd", "installed"), Line::skip("operator", "no Lease named")];
        assert!(all_passed(&lines));
        assert_eq!(render(&lines), "[ok]   crd: installed\n[skip] operator: no Lease named\n");
        assert!(!all_passed(&[Line::pass("a", ""), Line::fail("b", "why")]));
    }
}
