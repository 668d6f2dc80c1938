//! An idle limit watched by looks rather than by times: whoever uses the thing sets a flag (no
//! clock read, no lock), and a timer looks [`IdleLooks::PER_LIMIT`] times a limit. The thing
//! has been idle for the whole limit, and at most half of it more, when that many looks in a
//! row found it idle since the one before. The client connections (`http_server`) and the
//! processor connections (`upstream::multiplexed`) are closed this way.

#[derive(Default)]
pub struct IdleLooks {
    in_a_row: u32,
}

impl IdleLooks {
    pub const PER_LIMIT: u32 = 2;

    /// Counts a look (`idle`: nothing used the thing since the last one) and says whether it has
    /// now been idle for the whole limit.
    pub fn idle_after_look(&mut self, idle: bool) -> bool {
        self.in_a_row = if idle { self.in_a_row + 1 } else { 0 };
        self.in_a_row >= Self::PER_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::IdleLooks;

    #[test]
    fn idle_only_after_as_many_idle_looks_in_a_row_as_a_limit_holds() {
        let mut looks = IdleLooks::default();
        assert!(!looks.idle_after_look(true), "half the limit idle");
        assert!(
            !looks.idle_after_look(false),
            "used since: the count starts again"
        );
        assert!(!looks.idle_after_look(true));
        assert!(looks.idle_after_look(true), "a whole limit idle");
    }
}
