//! How a statement's values are marked, on each engine.

use super::SqlStore;

/// How a statement's values are marked. On SQLite, anonymous `?` marks: sqlx's SQLite driver
/// looks each numbered mark (`$n`) up by its name among all of the statement's parameters, so
/// binding a statement of numbered marks takes time quadratic in its size (400 rows of tokens
/// a statement stored 3,650 a second, 12 rows 28,000); anonymous marks are bound in order with
/// no lookup, so a statement can carry hundreds of rows. PostgreSQL takes numbered marks only.
#[derive(Clone, Copy)]
pub(in crate::store) enum Marks {
    Anonymous,
    Numbered,
}

impl Marks {
    pub(in crate::store) fn of(store: &SqlStore) -> Self {
        if store.sqlite.is_some() {
            Self::Anonymous
        } else {
            Self::Numbered
        }
    }

    /// `n` marks, the first numbered `first`, separated by commas.
    pub(in crate::store) fn list(self, first: usize, n: usize) -> String {
        let marks: Vec<String> = match self {
            Self::Anonymous => vec!["?".to_owned(); n],
            Self::Numbered => (first..first + n).map(|i| format!("${i}")).collect(),
        };
        marks.join(", ")
    }

    /// `(…), (…)`: the VALUES list of a multi-row insert of `rows` rows of `columns` values.
    pub(in crate::store) fn rows(self, rows: usize, columns: usize) -> String {
        (0..rows)
            .map(|row| format!("({})", self.list(row * columns + 1, columns)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::Marks;

    #[test]
    fn marks_are_anonymous_or_numbered_in_order() {
        assert_eq!(Marks::Anonymous.rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(Marks::Numbered.rows(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(Marks::Numbered.list(3, 2), "$3, $4");
    }
}
