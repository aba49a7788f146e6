//! The hot path allocates nothing per message: two one-second runs against the in-process sink,
//! one with 20× the messages of the other, must make about the same number of allocations
//! (whatever is per second — histogram hand-offs, progress — or per client is the same in both).
// The counting allocator below needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code, clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use common::quick;
use vireo_loadtest::sink::Sink;
use vireo_loadtest::{Scenario, run};

/// Counts every allocation of every thread (generator, controller and sink alike).
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees are the caller's guarantees; counting is one relaxed atomic add, which neither
// allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; `ptr` came from this allocator, that is from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made during a one-second QoS 1 fan-in run at `rate` per publisher, and the
/// messages it delivered.
fn allocations_for(rate: f64) -> (u64, u64) {
    let sink = Sink::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = quick(
        Scenario::FanIn {
            publishers: 4,
            subscribers: 1,
        },
        sink.local_addr(),
        1,
    );
    c.rate = Some(rate);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let report = run(&c).unwrap();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    (allocations, report.messages.delivered)
}

#[test]
fn allocations_do_not_grow_with_messages() {
    let (few_allocs, few) = allocations_for(500.0);
    let (many_allocs, many) = allocations_for(10_000.0);
    assert!(many >= few * 10, "{few} vs {many} messages");
    let extra_messages = many - few;
    let extra_allocs = many_allocs.saturating_sub(few_allocs);
    // Buffers may grow a few times more under the higher rate; nothing may scale with messages.
    assert!(
        extra_allocs * 100 < extra_messages,
        "{extra_allocs} more allocations for {extra_messages} more messages \
         ({few_allocs} for {few}, {many_allocs} for {many})"
    );
    eprintln!("{few_allocs} allocations for {few} messages, {many_allocs} for {many}");
}
