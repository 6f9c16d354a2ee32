//! One lock policy for every crate: a `std` lock whose holder panicked is taken anyway.
//!
//! A panic in one FUSE request or one upload task must not turn every later request that
//! touches the same table into a second panic: the mount would stop answering. What a
//! panicking holder leaves behind is a state between two of its steps, which the code under
//! these locks already tolerates from a task cancelled between awaits; the panic itself is
//! logged where it happened.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] under the policy above.
pub trait Locked<T: ?Sized> {
    /// The guard, whether or not an earlier holder panicked.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`] under the policy above.
pub trait ReadWriteLocked<T: ?Sized> {
    /// A read guard, whether or not an earlier holder panicked.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// A write guard, whether or not an earlier holder panicked.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> ReadWriteLocked<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_whose_holder_panicked_is_still_taken() {
        let mutex = Mutex::new(1);
        let rw = RwLock::new(2);
        let _ = std::panic::catch_unwind(|| {
            let _held = mutex.lock().unwrap();
            let _written = rw.write().unwrap();
            panic!("a holder panics");
        });
        assert!(mutex.is_poisoned() && rw.is_poisoned());
        *mutex.locked() += 1;
        assert_eq!(*mutex.locked(), 2);
        *rw.write_locked() += 1;
        assert_eq!(*rw.read_locked(), 3);
    }
}
