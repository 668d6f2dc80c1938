//! How a statement's values are marked, on each engine; and the texts of statements whose
//! size varies with their group, each built once.

use std::sync::{Arc, OnceLock};

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

/// Group sizes whose statement text is kept once built; a larger group's is built each time.
const KEPT_SIZES: usize = 64;

/// A statement's text for each size of group it is written for (rows inserted, ids read),
/// built the first time a size is used and kept for the process's life: on PostgreSQL every
/// call built its audit `INSERT`'s text anew and its grouped token read's (the profile put
/// ~10,500 instructions a call there; the count fell by 4,300: docs/benchmarks.md, issue 17's
/// nineteenth step). At most [`KEPT_SIZES`] texts a statement.
pub(in crate::store) struct TextBySize {
    kept: [OnceLock<Arc<str>>; KEPT_SIZES],
    build: fn(usize) -> String,
}

impl TextBySize {
    /// `build(n)` is the text for a group of `n` (from 1).
    pub(in crate::store) const fn new(build: fn(usize) -> String) -> Self {
        Self {
            kept: [const { OnceLock::new() }; KEPT_SIZES],
            build,
        }
    }

    /// The text for a group of `size`.
    pub(in crate::store) fn get(&self, size: usize) -> Arc<str> {
        match size.checked_sub(1).and_then(|i| self.kept.get(i)) {
            Some(slot) => slot.get_or_init(|| (self.build)(size).into()).clone(),
            None => (self.build)(size).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{KEPT_SIZES, Marks, TextBySize};

    #[test]
    fn a_size_s_text_is_built_once_and_is_the_text_built_for_it() {
        static TEXTS: TextBySize = TextBySize::new(|n| Marks::Numbered.rows(n, 2));
        for size in [1, 2, 7, KEPT_SIZES, KEPT_SIZES + 1, 300] {
            let first = TEXTS.get(size);
            assert_eq!(&*first, Marks::Numbered.rows(size, 2), "size {size}");
            let again = TEXTS.get(size);
            assert_eq!(first, again);
            // Kept sizes hand out the one text built; larger ones are built each time.
            assert_eq!(
                Arc::ptr_eq(&first, &again),
                size <= KEPT_SIZES,
                "size {size}"
            );
        }
        assert_eq!(&*TEXTS.get(0), "");
    }

    #[test]
    fn marks_are_anonymous_or_numbered_in_order() {
        assert_eq!(Marks::Anonymous.rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(Marks::Numbered.rows(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(Marks::Numbered.list(3, 2), "$3, $4");
    }
}
