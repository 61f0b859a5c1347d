//! Futures written straight into their heap allocation.
//!
//! Awaiting a future moves it into the awaiting future's state, and each level of `async fn`
//! holds the whole state of the one it awaits: a request's chain of futures is several KiB,
//! copied once per level. A future boxed where it is built is a pointer to the levels above.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;

/// Moves `future` into `slot`, an allocation made before the future was built (pass
/// `Box::new_uninit()`), so the compiler can construct the future directly in the heap;
/// `Box::pin(future)` builds it on the stack and copies it.
#[inline(always)]
pub fn boxed<F: Future>(slot: Box<MaybeUninit<F>>, future: F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(slot, future))
}
