//! A deadline per connection and phase that costs no timer per request. Arming a tokio timer for
//! every request head and every upstream answer (and cancelling it a moment later) was a tenth
//! of a proxied `GET`'s instructions. Here each phase keeps one timer for the connection's
//! life; a request only says when its phase began. The timer may fire for an earlier request
//! whose phase is long over: then it is set again for the current one, so it fires at most
//! once per period, and a phase is never cut before its own `began + period`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

pub struct Deadline {
    period: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl Deadline {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            sleep: Box::pin(tokio::time::sleep(period)),
        }
    }

    /// Whether the phase that `began` has lasted its period; when not, the task is woken by
    /// then. Called when the phase's work is pending.
    pub fn expired(&mut self, cx: &mut Context<'_>, began: Instant) -> bool {
        let due = began + self.period;
        if self.sleep.deadline() > due {
            self.sleep.as_mut().reset(due);
        }
        while self.sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= due {
                return true;
            }
            self.sleep.as_mut().reset(due);
        }
        false
    }

    /// `work`'s output, or `None` once the phase that `began` has lasted its period.
    pub async fn run<F: Future>(&mut self, began: Instant, work: F) -> Option<F::Output> {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| match work.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending if self.expired(cx, began) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_phase_ends_at_its_own_start_plus_the_period_not_an_earlier_ones() {
        let mut deadline = Deadline::new(Duration::from_secs(10));
        let first = Instant::now();
        assert_eq!(deadline.run(first, async { 1 }).await, Some(1));
        tokio::time::advance(Duration::from_secs(8)).await;
        // A later phase: the timer armed for the first fires at 10 s and must not end it.
        let second = Instant::now();
        let pending = std::future::pending::<()>();
        assert_eq!(deadline.run(second, pending).await, None);
        let ended = Instant::now();
        assert_eq!(ended - second, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_in_time_is_not_cut() {
        let mut deadline = Deadline::new(Duration::from_secs(10));
        let began = Instant::now();
        let slow = async {
            tokio::time::sleep(Duration::from_secs(9)).await;
            "done"
        };
        assert_eq!(deadline.run(began, slow).await, Some("done"));
    }
}
