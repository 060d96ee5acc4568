//! The driver's wake-up signal (issue 17): a new request deadline wakes the
//! driver only when it sleeps past it, and output queued by a user thread
//! goes to the driver's inline transmit first, waking the driver only when
//! that transmit could not finish the job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reign_proto::WakeSignal;

#[test]
fn a_deadline_wakes_the_driver_only_when_it_sleeps_past_it() {
    let wake = WakeSignal::default();
    let t0 = Instant::now() + Duration::from_secs(1);
    let tick = Duration::from_nanos(1);

    // Never armed (a driver that does not say, or the simulator): always.
    wake.notify_deadline(t0);
    assert!(wake.take());

    wake.arm(Some(t0));
    wake.notify_deadline(t0 + tick); // over: the driver wakes before it
    assert!(!wake.take());
    wake.notify_deadline(t0); // at: the same instant is covered
    assert!(!wake.take());
    wake.notify_deadline(t0 - tick); // under: it must wake earlier
    assert!(wake.take());

    // Sleeping with no deadline at all: every deadline wakes it.
    wake.arm(None);
    wake.notify_deadline(t0 + Duration::from_secs(3600));
    assert!(wake.take());

    // Awake (between a wake-up and its next sleep): always.
    wake.arm(Some(t0));
    wake.disarm();
    wake.notify_deadline(t0 + Duration::from_secs(3600));
    assert!(wake.take());
}

#[test]
fn queued_output_goes_inline_first_and_wakes_the_driver_when_that_fails() {
    let wake = WakeSignal::default();
    // Without an inline transmit: a plain wake-up.
    wake.notify_output();
    assert!(wake.take());

    let calls = Arc::new(AtomicUsize::new(0));
    let succeed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (c, s) = (calls.clone(), succeed.clone());
    wake.set_inline(Box::new(move || {
        c.fetch_add(1, Ordering::SeqCst);
        s.load(Ordering::SeqCst)
    }));
    // A second one is ignored: one driver per node.
    wake.set_inline(Box::new(|| {
        panic!("the second inline transmit must not run")
    }));

    wake.notify_output();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(!wake.take(), "written inline: the driver stays asleep");

    succeed.store(false, Ordering::SeqCst);
    wake.notify_output();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(wake.take(), "not written inline: the driver wakes");

    // A plain notify (control frames, budgets) never runs it.
    wake.notify();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(wake.take());
}
