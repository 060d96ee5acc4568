//! One rule for poisoned mutexes: recover the guard.
//!
//! A panic in a user callback while a lock is held (a `Drop` impl, a
//! serializer) must not take the node down with it; every shared table in
//! this crate stays consistent between statements, so the data behind a
//! poisoned lock is still good and every lock in reign (this crate, the driver and the CLI) goes through
//! [`lock`].

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, recovering the guard if another thread panicked holding it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks `l`, recovering the guard if a writer panicked.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks `l`, recovering the guard if a holder panicked.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
