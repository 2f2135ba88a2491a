//! A wall-clock deadline whose timer is armed only if the call has to wait.
//!
//! `tokio::time::timeout` registers a timer entry on its first poll and removes it when
//! dropped, and both take the time driver's one process-wide mutex. A plugin call that
//! never waits (most tool calls: no HTTP, guest code that finishes before the next epoch
//! tick) completes on its first poll, so it paid for two trips through that shared lock
//! for nothing, and with several workers they contended on it. [`within`] polls the call
//! first and arms the timer only when the call returns `Pending`, at the deadline fixed
//! when the call started: the limit is exactly the same, only its cost moved to the calls
//! that actually wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// The call ran past its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Runs `fut` until it completes or `deadline` passes, whichever comes first. `fut` is
/// pinned by the caller (`std::pin::pin!`), so nothing is allocated unless a timer is.
pub(crate) fn within<F: Future + Unpin>(deadline: Instant, fut: F) -> Within<F> {
    Within {
        fut,
        deadline,
        timer: None,
    }
}

pub(crate) struct Within<F> {
    fut: F,
    deadline: Instant,
    /// Armed on the first `Pending`.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<F: Future + Unpin> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = Pin::new(&mut this.fut).poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_call_that_never_waits_needs_no_timer() {
        let fut = std::pin::pin!(async { 7 });
        let mut call = within(Instant::now() + Duration::from_secs(60), fut);
        let out = std::future::poll_fn(|cx| Pin::new(&mut call).poll(cx)).await;
        assert_eq!(out, Ok(7));
        assert!(
            call.timer.is_none(),
            "a timer was armed for a call that never waited"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_is_stopped_at_the_deadline_fixed_at_its_start() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(100);
        // The call waits 40 ms before it first yields, as if busy; the deadline still
        // counts from the start, not from when the timer was armed.
        let out = within(
            deadline,
            std::pin::pin!(async {
                tokio::time::advance(Duration::from_millis(40)).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }),
        )
        .await;
        assert_eq!(out, Err(Elapsed));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_finishes_in_time_after_waiting_returns_its_output() {
        let deadline = Instant::now() + Duration::from_millis(100);
        let out = within(
            deadline,
            std::pin::pin!(async {
                tokio::time::sleep(Duration::from_millis(99)).await;
                "done"
            }),
        )
        .await;
        assert_eq!(out, Ok("done"));
    }
}
