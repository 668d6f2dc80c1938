//! Group commit: calls that write at the same moment share one transaction.
//!
//! Each call queues its item; whichever call gets the turn first (the leader) takes every
//! queued item and writes them together, on its own thread, then hands each call its result.
//! At low load a group is the leader's own item and nothing waits; under load the calls that
//! queued while a group was being written share the next one, so the commit's fixed cost (its
//! page writes to the write-ahead log) is paid once per group instead of once per call.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// Items written together at most.
const MAX_GROUP: usize = 256;

pub(super) struct Group<T, R> {
    /// Items not yet taken by a leader, oldest first, each with its caller's answer channel.
    queued: Mutex<Vec<(T, oneshot::Sender<R>)>>,
    /// A permit is held by each leader while it writes its group.
    turn: Arc<tokio::sync::Semaphore>,
    /// When `turn` is shared with other groups: how many of its permits this group's leaders
    /// may hold at once, so that this group's statements are fewer and larger.
    own_share: Option<tokio::sync::Semaphore>,
}

impl<T, R> Group<T, R> {
    /// Groups are written by at most `leaders` calls at once.
    #[cfg(test)]
    pub(super) fn new(leaders: usize) -> Self {
        Self::sharing_turn(Arc::new(tokio::sync::Semaphore::new(leaders)))
    }

    /// Groups are written while holding a permit of `turn`, which other writers may hold too.
    pub(super) fn sharing_turn(turn: Arc<tokio::sync::Semaphore>) -> Self {
        Self {
            queued: Mutex::new(Vec::new()),
            turn,
            own_share: None,
        }
    }

    /// Of the shared turn, this group's leaders hold at most `leaders` (at least one) permits
    /// at once.
    pub(super) fn at_most(mut self, leaders: usize) -> Self {
        self.own_share = Some(tokio::sync::Semaphore::new(leaders.max(1)));
        self
    }

    /// A leader's turn: a permit of its own share (if it has one), then of the shared turn.
    async fn take_turn(&self) -> Option<Turn<'_>> {
        let own = match &self.own_share {
            Some(share) => Some(share.acquire().await.ok()?),
            None => None,
        };
        let shared = self.turn.acquire().await.ok()?;
        Some(Turn {
            _shared: shared,
            _own: own,
        })
    }

    /// `item`'s result, written by `write` with the items queued beside it; `None` if the
    /// leader that took it answered nothing (it panicked: nothing of its group was committed
    /// then, the transaction rolls back when dropped). `write` answers one result per item, in order; it runs
    /// synchronously, so a leader dropped mid-way (its client gone) never leaves a group half
    /// answered. An item whose caller is gone before a leader takes it is not written.
    pub(super) async fn run(&self, item: T, write: impl Fn(&[T]) -> Vec<R>) -> Option<R> {
        let mut result = self.queue(item);
        loop {
            tokio::select! {
                biased;
                written = &mut result => return written.ok(),
                Some(_turn) = self.take_turn() => {
                    if let Some(written) = already_written(&mut result) {
                        return written;
                    }
                    if !self.lead(&write) {
                        break;
                    }
                }
            }
        }
        // Nothing was left queued, this call's item neither: a leader still writing has it.
        // Taking turns again would only spin until that leader answers.
        result.await.ok()
    }

    fn queue(&self, item: T) -> oneshot::Receiver<R> {
        let (answer, result) = oneshot::channel();
        self.queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((item, answer));
        result
    }

    /// Writes the queued items as one group; whether there were any.
    fn lead(&self, write: &impl Fn(&[T]) -> Vec<R>) -> bool {
        let Some((items, answers)) = self.take() else {
            return false;
        };
        answer(answers, write(&items));
        true
    }

    /// The queued items (up to [`MAX_GROUP`]) whose callers still wait, with their answers.
    fn take(&self) -> Option<(Vec<T>, Vec<oneshot::Sender<R>>)> {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = queued.len().min(MAX_GROUP);
        let group: Vec<_> = queued
            .drain(..taken)
            .filter(|(_, answer)| !answer.is_closed())
            .collect();
        drop(queued);
        (!group.is_empty()).then(|| group.into_iter().unzip())
    }
}

impl<T: Send + 'static, R: Send + 'static> Group<T, R> {
    /// As [`Self::run`], for a `write` that awaits (a database across the network). The leader
    /// writes its group in a task of its own: a leader dropped mid-way (its client gone)
    /// cannot leave the others unanswered, nor stop a write whose outcome they would then not
    /// know. `None`: the write panicked, and whether it landed is unknown.
    pub(super) async fn run_async<W>(&self, item: T, write: impl Fn(Vec<T>) -> W) -> Option<R>
    where
        W: Future<Output = Vec<R>> + Send + 'static,
    {
        let mut result = self.queue(item);
        loop {
            tokio::select! {
                biased;
                written = &mut result => return written.ok(),
                Some(_turn) = self.take_turn() => {
                    if let Some(written) = already_written(&mut result) {
                        return written;
                    }
                    let Some((items, answers)) = self.take() else {
                        break;
                    };
                    let writing = write(items);
                    let _ = tokio::spawn(async move { answer(answers, writing.await) }).await;
                }
            }
        }
        // As in `run`: a leader still writing has this call's item.
        result.await.ok()
    }
}

/// The permits a leader holds while it writes its group. Fields drop in order: the shared
/// permit goes back before the group's own, so the group never holds more of the shared turn
/// than its share.
struct Turn<'a> {
    _shared: tokio::sync::SemaphorePermit<'a>,
    _own: Option<tokio::sync::SemaphorePermit<'a>>,
}

/// Once a call has the turn: its result if a leader before it wrote its item meanwhile
/// (`Some(None)`: that leader panicked); `None` if it has no result yet (its item is still
/// queued, or with a leader still writing).
fn already_written<R>(result: &mut oneshot::Receiver<R>) -> Option<Option<R>> {
    match result.try_recv() {
        Ok(written) => Some(Some(written)),
        Err(oneshot::error::TryRecvError::Closed) => Some(None),
        Err(oneshot::error::TryRecvError::Empty) => None,
    }
}

fn answer<R>(answers: Vec<oneshot::Sender<R>>, results: Vec<R>) {
    // A call left without a result would hear `None` and could not know its item's fate.
    debug_assert_eq!(answers.len(), results.len(), "one result per item");
    for (answer, written) in answers.into_iter().zip(results) {
        let _ = answer.send(written);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::Group;

    /// A group of `u32`s written by doubling them, slowly, recording what each group held.
    fn call(
        group: &Arc<Group<u32, u32>>,
        written: &Arc<Mutex<Vec<Vec<u32>>>>,
        item: u32,
    ) -> tokio::task::JoinHandle<Option<u32>> {
        let (group, written) = (group.clone(), written.clone());
        tokio::spawn(async move {
            group
                .run(item, |items| {
                    written.lock().unwrap().push(items.to_vec());
                    std::thread::sleep(Duration::from_millis(100));
                    items.iter().map(|i| i * 2).collect()
                })
                .await
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_queued_while_a_group_is_written_share_the_next_and_get_their_own_result() {
        let (group, written) = (Arc::new(Group::new(1)), Arc::new(Mutex::new(Vec::new())));
        let first = call(&group, &written, 1);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let others: Vec<_> = (2..=9).map(|i| call(&group, &written, i)).collect();
        assert_eq!(first.await.unwrap(), Some(2));
        for (i, other) in (2..=9).zip(others) {
            assert_eq!(other.await.unwrap(), Some(i * 2));
        }
        let written = written.lock().unwrap().clone();
        assert_eq!(written, vec![vec![1], (2..=9).collect::<Vec<_>>()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_item_whose_caller_left_before_its_group_is_not_written() {
        let (group, written) = (Arc::new(Group::new(1)), Arc::new(Mutex::new(Vec::new())));
        let first = call(&group, &written, 1);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let gone = call(&group, &written, 2);
        let kept = call(&group, &written, 3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        assert_eq!(first.await.unwrap(), Some(2));
        assert_eq!(kept.await.unwrap(), Some(6));
        let written = written.lock().unwrap().clone();
        assert_eq!(written, vec![vec![1], vec![3]]);
    }

    /// Waits (up to a few seconds) until `done` holds.
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..5000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("not reached in time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_holds_no_more_of_a_shared_turn_than_its_share() {
        let turn = Arc::new(tokio::sync::Semaphore::new(4));
        let group = Arc::new(Group::<u32, u32>::sharing_turn(turn.clone()).at_most(2));
        let written = Arc::new(Mutex::new(Vec::new()));
        // Every write waits here until the test lets them all through.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let call = |item: u32| {
            let (group, written, gate) = (group.clone(), written.clone(), gate.clone());
            tokio::spawn(async move {
                group
                    .run_async(item, move |items| {
                        let mut seen = items.clone();
                        seen.sort_unstable();
                        written.lock().unwrap().push(seen);
                        let gate = gate.clone();
                        async move {
                            drop(gate.acquire().await.unwrap());
                            items.iter().map(|i| i * 2).collect()
                        }
                    })
                    .await
            })
        };
        let groups = || written.lock().unwrap().len();
        let first = call(1);
        until(|| groups() == 1).await;
        let second = call(2);
        until(|| groups() == 2).await;
        let later: Vec<_> = (3..=5).map(call).collect();
        until(|| group.queued.lock().unwrap().len() == 3 || groups() > 2).await;
        // Time for a third leader to start, were it let.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(groups(), 2, "no third group while two are out");
        assert_eq!(
            turn.available_permits(),
            2,
            "the rest of the shared turn left to others"
        );
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(2));
        assert_eq!(second.await.unwrap(), Some(4));
        for (i, call) in (3..=5).zip(later) {
            assert_eq!(call.await.unwrap(), Some(i * 2));
        }
        let written = written.lock().unwrap().clone();
        assert_eq!(
            written,
            vec![vec![1], vec![2], vec![3, 4, 5]],
            "the calls that came while both were out went as one group"
        );
    }
}
