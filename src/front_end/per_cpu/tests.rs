//! Unit tests of the critical sections and the slow paths, on the calling thread's CPU.

use super::*;
use crate::size_class::class_for;

/// The tests here change capacities (`release_all`) that the others assert on: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Starts the caches; false (and the test passes vacuously, saying so) where `rseq` is off.
fn started() -> Option<Here> {
    let here = Here::find();
    if here.is_none() {
        eprintln!("per-CPU caches are off on this machine; nothing to test");
    }
    here
}

/// Pins the calling thread to `cpu` for the rest of the test's thread.
fn pin(cpu: usize) -> bool {
    // SAFETY: plain data; the call reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[test]
fn push_then_pop_returns_the_same_objects_in_reverse() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(|| {
        let Some(here) = started() else { return };
        assert!(pin(here.cpu));
        let class = class_for(48, 8).unwrap();
        // Objects of the class from the central lists.
        let objects: Vec<*mut u8> = (0..class.batch()).map(|_| alloc(class)).collect();
        assert!(objects.iter().all(|p| !p.is_null()));
        release_all();
        let here = Here::find().unwrap();
        assert_eq!(here.header(class).capacity(), 0, "release_all sets capacity 0");
        // SAFETY: dead objects of `class`.
        assert!(!unsafe { here.push(class, objects[0]) }, "no capacity: the push misses");
        // Slow start: 1, 2, 4, ... up to a batch.
        let batch = class.batch().min(MAX_CAPACITY[class.index()] as usize);
        let mut expected = 1;
        while here.header(class).capacity() < batch {
            assert!(here.grow(class));
            assert_eq!(here.header(class).capacity(), expected);
            expected = (expected * 2).min(batch);
        }
        let capacity = here.header(class).capacity();
        assert_eq!(capacity, batch);
        for &p in &objects[..capacity] {
            // SAFETY: as above.
            assert!(unsafe { here.push(class, p) });
        }
        // SAFETY: as above.
        assert!(!unsafe { here.push(class, objects[0]) }, "full: the push misses");
        check_invariants();
        for &p in objects[..capacity].iter().rev() {
            assert_eq!(here.pop(class), p);
        }
        assert!(here.pop(class).is_null(), "empty: the pop misses");
        for p in objects {
            // SAFETY: as above.
            assert!(unsafe { dealloc(p, class) });
        }
        check_invariants();
    })
    .join()
    .unwrap();
}

#[test]
fn a_header_changes_only_on_its_own_cpu() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(|| {
        let Some(here) = started() else { return };
        assert!(pin(here.cpu));
        let class = class_for(200, 8).unwrap();
        let old = here.header(class);
        let new = Header { end: old.end, ..old };
        // SAFETY: a header of a mapped slab; `new` equals `old`.
        let swap = |cpu| unsafe {
            rseq::compare_and_swap_header(
                here.offset,
                here.slabs,
                cpu,
                class.index(),
                old.pack(),
                new.pack(),
            )
        };
        let (_, cpus) = slab::region();
        assert!(swap(here.cpu), "on its CPU, with the right old value");
        assert!(!swap(here.cpu + 1), "the thread is not on the other CPU");
        assert!(!swap(cpus + 5), "no such CPU");
        let stale = Header { current: old.current.wrapping_add(1), ..old };
        // SAFETY: as above; the header does not hold `stale`, so nothing is written.
        assert!(!unsafe {
            rseq::compare_and_swap_header(
                here.offset,
                here.slabs,
                here.cpu,
                class.index(),
                stale.pack(),
                new.pack(),
            )
        });
    })
    .join()
    .unwrap();
}

#[test]
fn refills_and_flushes_move_batches_and_stay_within_capacity() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(|| {
        let Some(here) = started() else { return };
        assert!(pin(here.cpu));
        let class = class_for(96, 8).unwrap();
        let most = MAX_CAPACITY[class.index()] as usize;
        let objects: Vec<*mut u8> = (0..3 * most).map(|_| alloc(class)).collect();
        let mut sorted = objects.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), objects.len(), "an object was handed out twice");
        for &p in &objects {
            // SAFETY: dead objects of `class`.
            assert!(unsafe { dealloc(p, class) });
        }
        let h = Here::find().unwrap().header(class);
        assert!(h.capacity() <= most && h.len() <= h.capacity(), "{h:?}");
        assert!(h.len() > 0);
        check_invariants();
        release_all();
        assert_eq!(Here::find().unwrap().header(class).len(), 0);
    })
    .join()
    .unwrap();
}

#[test]
fn unregistered_offsets_are_refused() {
    // The fast path's sign test: `cpu_id` -1 and -2 (not registered, registration failed)
    // shifted by the slab shift stay negative.
    for cpu in [-1i64, -2] {
        assert!((cpu << rseq::SLAB_SHIFT) < 0);
    }
}
