//! ARCHITECTURE.md's table of rules, read by tidy (which checks what it
//! names exists) and by `prove` (which runs each fault against its row's
//! tests).

/// One row of the table: its cells, in the table's column order.
pub struct Rule {
    pub cells: Vec<String>,
}

impl Rule {
    /// The rule, as the interface states it.
    pub fn name(&self) -> &str {
        &self.cells[0]
    }

    /// The `path:symbol`s where the rule is enforced.
    #[cfg(test)]
    pub fn homes(&self) -> Vec<&str> {
        self.quoted(1)
    }

    /// The deliberate faults that break it.
    pub fn faults(&self) -> Vec<&str> {
        self.quoted(2)
    }

    /// The tier-2 tests that race it (function names).
    pub fn tests(&self) -> Vec<&str> {
        self.quoted(3)
    }

    fn quoted(&self, cell: usize) -> Vec<&str> {
        self.cells.get(cell).map_or_else(Vec::new, |c| quoted(c))
    }
}

/// The names written in backquotes in `cell`.
pub fn quoted(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The rows of the "Rules" section of `architecture` (ARCHITECTURE.md's text).
pub fn rules(architecture: &str) -> anyhow::Result<Vec<Rule>> {
    let section = architecture
        .split("\n## Rules\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .ok_or_else(|| anyhow::anyhow!("ARCHITECTURE.md has no Rules section"))?;
    Ok(section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| rule") && !l.starts_with("| ---"))
        .map(|l| Rule {
            cells: l
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect(),
        })
        .collect())
}

/// The tests of every row that names `fault`.
pub fn tests_breaking<'a>(rules: &'a [Rule], fault: &str) -> Vec<&'a str> {
    rules
        .iter()
        .filter(|rule| rule.faults().contains(&fault))
        .flat_map(Rule::tests)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# A\n\n## Rules\nprose\n\
        | rule (interface) | lives in | fault | tier-2 tests | sizes | forced by |\n\
        | --- | --- | --- | --- | --- | --- |\n\
        | one | `a.rs:f` | `f1`, `f2` | `t1`, `t2` (isolation spec) | 2 | barrier |\n\
        | two | `b.rs:g` | `f3` | `t3` | 1 | lock |\n\
        \n## Invariants\n| not | a | rule |\n";

    #[test]
    fn rows_and_their_names_are_read_from_the_rules_section_alone() {
        let rules = rules(DOC).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].name(), "one");
        assert_eq!(rules[0].homes(), ["a.rs:f"]);
        assert_eq!(rules[0].faults(), ["f1", "f2"]);
        assert_eq!(rules[0].tests(), ["t1", "t2"]);
        assert_eq!(tests_breaking(&rules, "f2"), ["t1", "t2"]);
        assert_eq!(tests_breaking(&rules, "f3"), ["t3"]);
        assert!(tests_breaking(&rules, "f4").is_empty());
        assert!(super::rules("no section").is_err());
    }
}
