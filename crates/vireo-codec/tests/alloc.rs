//! "Zero allocations per decoded PUBLISH", measured with a counting global allocator.
//!
//! 1000 PUBLISH packets are encoded into one read buffer up front, then decoded in a loop while
//! the allocator counts. The first `split_to` on a `BytesMut` that still owns a plain `Vec` turns
//! it into the shared representation, which allocates its small reference-counted header once;
//! every later split only bumps that count. So the whole loop may allocate at most once, and after
//! the first packet not at all. Topic and payload are slices of the read buffer, never copies.

// The counting allocator below needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::num::NonZeroU16;

use vireo_codec::{BytesMut, Packet, ProtocolVersion, Publish, QosPid, TopicName, decode};

/// Counts allocations made by the current thread while counting is switched on; a thread-local
/// switch keeps other test threads out of the count.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: never panic inside the allocator, even while thread-locals are torn down.
    let on = COUNTING.try_with(Cell::get).unwrap_or(false);
    if on {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees are the caller's guarantees; counting touches only `const`-initialised
// thread-locals of `Cell`s, which neither allocate nor unwind.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
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

/// Runs `f` and returns how many allocations this thread made during it.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

const PACKETS: usize = 1000;

/// One buffer holding `PACKETS` QoS 1 PUBLISH packets with 64-byte payloads.
fn read_buffer(version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..PACKETS {
        let id = NonZeroU16::new(u16::try_from(i % 60_000 + 1).expect("fits")).expect("non-zero");
        let p = Publish {
            qos: QosPid::AtLeastOnce(id),
            retain: i % 2 == 0,
            ..Publish::new(
                TopicName::try_from("sensors/building-7/floor-3/temp").expect("topic"),
                vec![b'x'; 64],
            )
        };
        Packet::Publish(p)
            .encode(version, &mut buf)
            .expect("encodes");
    }
    buf
}

fn check_zero_alloc_decode(version: ProtocolVersion) {
    let mut buf = read_buffer(version);
    let region = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();

    // The first decode may promote the buffer to its shared form: at most one allocation.
    let (first, first_allocs) = allocations_during(|| decode(&mut buf, version, 1 << 20));
    assert!(
        first_allocs <= 1,
        "first decode allocated {first_allocs} times"
    );
    assert!(matches!(first, Ok(Some(Packet::Publish(_)))));
    drop(first);

    // Every later PUBLISH: no allocation at all. Sum lengths so the work cannot be optimised out.
    let ((decoded, payload_bytes, all_in_buffer), allocs) = allocations_during(|| {
        let (mut decoded, mut payload_bytes, mut all_in_buffer) = (0usize, 0usize, true);
        while let Ok(Some(Packet::Publish(p))) = decode(&mut buf, version, 1 << 20) {
            decoded += 1;
            payload_bytes += p.payload.len();
            // Zero-copy: topic and payload point into the original read buffer.
            all_in_buffer &= region.contains(&(p.payload.as_ptr() as usize))
                && region.contains(&(p.topic.as_ptr() as usize));
        }
        (decoded, payload_bytes, all_in_buffer)
    });
    assert_eq!(decoded, PACKETS - 1, "every packet decoded");
    assert_eq!(payload_bytes, (PACKETS - 1) * 64);
    assert!(
        all_in_buffer,
        "topic and payload must be slices of the read buffer"
    );
    assert_eq!(
        allocs, 0,
        "decoding {decoded} PUBLISH packets allocated {allocs} times"
    );
    assert!(buf.is_empty());
}

#[test]
fn decoding_publish_allocates_nothing_v311() {
    check_zero_alloc_decode(ProtocolVersion::V311);
}

#[test]
fn decoding_publish_without_properties_allocates_nothing_v5() {
    check_zero_alloc_decode(ProtocolVersion::V5);
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test itself: a counter that never counts would pass the tests above.
    let (v, allocs) = allocations_during(|| vec![0u8; 100]);
    assert_eq!(v.len(), 100);
    assert!(allocs >= 1);
}
