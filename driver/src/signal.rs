//! Small runtime-agnostic synchronisation: a level-triggered stop signal,
//! and racing futures without a runtime's `select!`.

use reign_proto::poison::lock;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Once stopped, stays stopped; every waiter wakes.
#[derive(Clone, Default)]
pub(crate) struct Stop {
    inner: Arc<StopInner>,
}

#[derive(Default)]
struct StopInner {
    stopped: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Stop {
    pub(crate) fn stop(&self) {
        if !self.inner.stopped.swap(true, Ordering::AcqRel) {
            let wakers = std::mem::take(&mut *lock(&self.inner.wakers));
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_stopped() {
            return Poll::Ready(());
        }
        let mut wakers = lock(&self.inner.wakers);
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        drop(wakers);
        if self.is_stopped() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Runs `future` unless the signal stops first (then `None`).
    pub(crate) async fn guard<F: Future>(&self, future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.poll_stopped(cx).map(|()| None)
        })
        .await
    }
}

/// The first of two futures to finish.
pub(crate) enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Races two futures; the loser is dropped.
pub(crate) async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        if let Poll::Ready(x) = Pin::new(&mut b).as_mut().poll(cx) {
            return Poll::Ready(Either::Right(x));
        }
        Poll::Pending
    })
    .await
}
