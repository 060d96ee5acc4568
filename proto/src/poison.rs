//! One rule for poisoned mutexes: recover the guard.
//!
//! A panic in a user callback while a lock is held (a `Drop` impl, a
//! serializer) must not take the node down with it; every shared table in
//! this crate stays consistent between statements, so the data behind a
//! poisoned lock is still good and every lock in the crate goes through
//! [`lock`].

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the guard if another thread panicked holding it.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
