//! Counts heap allocations on the local send + receive path.
//!
//! The counting allocator below is the one piece of `unsafe` in the project's
//! tests: a `GlobalAlloc` must be an `unsafe impl`. It only forwards to the
//! system allocator and bumps a thread-local counter.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use reign_proto::{Incarnation, Node};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` unchanged; the counter is a
// const-initialized thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn local_send_and_receive_allocates_once_per_message() {
    let node = Node::local(Incarnation(1));
    let (addr, mailbox) = node.new_mailbox();
    // Warm up: let both halves of the queue reach their steady-state capacity.
    for i in 0..64u64 {
        addr.send(i).unwrap();
    }
    while mailbox.try_recv().unwrap().is_some() {}
    for i in 0..64u64 {
        addr.send(i).unwrap();
        mailbox.try_recv().unwrap().unwrap();
    }

    const N: u64 = 10_000;
    let before = allocations();
    for i in 0..N {
        addr.send(i).unwrap();
        let msg = mailbox.try_recv().unwrap().unwrap();
        assert_eq!(msg.downcast::<u64>().unwrap(), i);
    }
    let per_message = (allocations() - before) as f64 / N as f64;
    println!("local send+receive of a u64: {per_message} heap allocations per message");
    // The message box is the only allocation: the value moves as `Box<dyn Any>`.
    assert!(per_message <= 1.0, "{per_message} allocations per message");
}
