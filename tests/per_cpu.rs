//! The per-CPU front end (`--features per-cpu`) under preemption, migration, `fork`, thread
//! exit, and without `rseq`. tcalloc is this binary's global allocator, so the test harness,
//! `Vec`s and threads all allocate through it too.
//!
//! Every block a test hands out is filled with a tag (thread, sequence number) and checked
//! before it is freed: a block handed out twice is overwritten by its second owner, and the
//! first owner's check fails.
#![cfg(feature = "per-cpu")]

mod rng;
use rng::Rng;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{mpsc, Arc, Mutex};
use tcalloc::per_cpu_introspect as per_cpu;
use tcalloc::TcAlloc;

#[global_allocator]
static GLOBAL: TcAlloc = TcAlloc;

/// The tests read global figures (cached bytes) and move threads: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether glibc registered `rseq` for this process (`__rseq_size > 0`).
fn rseq_registered() -> bool {
    // SAFETY: dlsym with NUL-terminated names; glibc's `__rseq_size` is an `unsigned int`.
    unsafe {
        let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
        !size.is_null() && *size.cast::<u32>() > 0
    }
}

/// Starts the per-CPU caches (the first allocation does) and says whether they are on; they
/// must be wherever glibc registered `rseq`, unless `TCALLOC_PER_CPU=0` or the build is
/// `hardened` (whose double-free check searches the thread caches' lists, so that they serve
/// everything).
fn per_cpu_on() -> bool {
    drop(std::hint::black_box(Box::new(1u64)));
    let on = per_cpu::is_on();
    let disabled = std::env::var("TCALLOC_PER_CPU").is_ok_and(|v| v == "0");
    let expected = rseq_registered() && !disabled && !cfg!(feature = "hardened");
    assert_eq!(on, expected, "per-CPU caches on iff rseq is registered (and not hardened)");
    on
}

/// A block with its layout and tag.
struct Block {
    ptr: *mut u8,
    layout: Layout,
    tag: u64,
}

// SAFETY: a block is owned by whoever holds it; the tests pass them between threads whole.
unsafe impl Send for Block {}

const SIZES: [usize; 8] = [8, 24, 64, 100, 256, 1000, 3000, 40_000];

impl Block {
    fn new(size: usize, align: usize, tag: u64) -> Block {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a non-zero size.
        let ptr = unsafe { TcAlloc.alloc(layout) };
        assert!(!ptr.is_null());
        assert_eq!(ptr as usize % align, 0);
        let words = size / 8;
        for i in 0..words {
            // SAFETY: inside the block, 8-aligned (every class is).
            unsafe { ptr.cast::<u64>().add(i).write(tag ^ i as u64) };
        }
        Block { ptr, layout, tag }
    }

    /// Checks the tag and frees the block.
    fn free(self) {
        for i in 0..self.layout.size() / 8 {
            // SAFETY: inside the live block.
            let word = unsafe { self.ptr.cast::<u64>().add(i).read() };
            assert_eq!(
                word,
                self.tag ^ i as u64,
                "block {:p} ({} bytes) word {i} was overwritten: handed out twice?",
                self.ptr,
                self.layout.size()
            );
        }
        // SAFETY: allocated with this layout, unused from here.
        unsafe { TcAlloc.dealloc(self.ptr, self.layout) };
    }
}

/// `rounds` rounds of allocating and freeing tagged blocks, some freed by the next thread
/// (`give`), some taken from the previous (`take`); calls `each_round` between rounds.
fn churn(
    thread: u64,
    rounds: usize,
    give: mpsc::Sender<Block>,
    take: mpsc::Receiver<Block>,
    mut each_round: impl FnMut(usize),
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((thread + 1) * 0x1234_5678));
    let mut live: Vec<Block> = Vec::new();
    let mut seq = 0u64;
    for round in 0..rounds {
        for _ in 0..64 {
            seq += 1;
            let size = SIZES[rng.below(SIZES.len())];
            let align = if rng.below(8) == 0 { 64 } else { 8 };
            live.push(Block::new(size, align, thread << 40 | seq << 8));
        }
        while live.len() > 48 {
            let block = live.swap_remove(rng.below(live.len()));
            if rng.below(4) == 0 {
                let _ = give.send(block);
            } else {
                block.free();
            }
        }
        while let Ok(block) = take.try_recv() {
            block.free();
        }
        each_round(round);
    }
    drop(give);
    for block in live {
        block.free();
    }
    for block in take {
        block.free();
    }
}

/// Runs `threads` churning threads in a ring (each frees some of its blocks on the next);
/// `each_round(thread, round)` runs between rounds.
fn ring(threads: usize, rounds: usize, each_round: impl Fn(usize, usize) + Sync + Send + 'static) {
    let each_round = Arc::new(each_round);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel()).unzip();
    let mut receivers: Vec<Option<mpsc::Receiver<Block>>> =
        receivers.into_iter().map(Some).collect();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let give = senders[(t + 1) % threads].clone();
            let take = receivers[t].take().unwrap();
            let each_round = each_round.clone();
            std::thread::spawn(move || churn(t as u64, rounds, give, take, |r| each_round(t, r)))
        })
        .collect();
    drop(senders);
    for h in handles {
        h.join().unwrap();
    }
}

fn cpus_allowed() -> Vec<usize> {
    // SAFETY: plain data; the call writes at most the set's size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set), 0);
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Moves thread `tid` (0: the calling thread) to `cpu`.
fn move_to(tid: libc::pid_t, cpu: usize) {
    // SAFETY: plain data; the call reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set);
    }
}

#[test]
fn more_threads_than_cores_never_share_a_block() {
    let _serial = serial();
    let on = per_cpu_on();
    let cpus = cpus_allowed().len();
    ring(4 * cpus.max(2), 300, |_, _| {});
    if on {
        assert!(per_cpu::cached_bytes() > 0, "the threads' frees went to the CPU caches");
        per_cpu::check_invariants();
    }
}

#[test]
fn threads_moved_between_cpus_while_they_allocate() {
    let _serial = serial();
    let on = per_cpu_on();
    let cpus = cpus_allowed();
    // Each thread moves itself every few rounds, and a mover thread moves them all from
    // outside, so that migrations land in the middle of critical sections too.
    let tids: Arc<Mutex<Vec<libc::pid_t>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let mover = {
        let (tids, stop, cpus) = (tids.clone(), stop.clone(), cpus.clone());
        std::thread::spawn(move || {
            let mut moves = 0usize;
            while !stop.load(Relaxed) {
                for (i, &tid) in tids.lock().unwrap().iter().enumerate() {
                    move_to(tid, cpus[(i + moves) % cpus.len()]);
                }
                moves += 1;
                std::thread::yield_now();
            }
            moves
        })
    };
    {
        let (cpus, tids, seen) = (cpus.clone(), tids.clone(), seen.clone());
        ring(2 * cpus.len().max(2), 400, move |thread, round| {
            if round == 0 {
                // SAFETY: no preconditions.
                tids.lock().unwrap().push(unsafe { libc::gettid() });
            }
            if round % 7 == 0 {
                move_to(0, cpus[(thread + round / 7) % cpus.len()]);
            }
            if let Some(cpu) = per_cpu::current_cpu() {
                seen.lock().unwrap().insert(cpu);
            }
        });
    }
    stop.store(true, Relaxed);
    let moves = mover.join().unwrap();
    assert!(moves > 0);
    if on {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), cpus.len(), "the threads ran on every allowed CPU: {seen:?}");
        per_cpu::check_invariants();
    }
}

#[test]
fn threads_that_exit_leave_their_objects_to_the_next_thread_on_the_cpu() {
    let _serial = serial();
    if !per_cpu_on() {
        return;
    }
    per_cpu::release_all();
    // The test harness's threads allocate meanwhile: a few hundred bytes.
    let baseline = per_cpu::cached_bytes();
    assert!(baseline < 4096, "release_all left {baseline} bytes");
    let freed: Vec<usize> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let blocks: Vec<Block> =
                    (0..200).map(|i| Block::new(128, 8, t << 40 | i << 8)).collect();
                let addresses: Vec<usize> = blocks.iter().map(|b| b.ptr as usize).collect();
                for b in blocks {
                    b.free();
                }
                addresses
            })
        })
        .flat_map(|h| h.join().unwrap())
        .collect();
    // The threads are gone; their last frees stay cached on their CPUs.
    let cached = per_cpu::cached_bytes();
    assert!(cached >= baseline + 128 * 100, "{cached} bytes cached after the threads exited");
    per_cpu::check_invariants();
    // A new thread (on any CPU) gets those objects back first, each once.
    let reused = std::thread::spawn(move || {
        let blocks: Vec<Block> = (0..400).map(|i| Block::new(128, 8, 99 << 40 | i << 8)).collect();
        let mut addresses: Vec<usize> = blocks.iter().map(|b| b.ptr as usize).collect();
        for b in blocks {
            b.free();
        }
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), 400, "a block was handed out twice");
        addresses
    })
    .join()
    .unwrap();
    let freed: std::collections::HashSet<usize> = freed.into_iter().collect();
    assert!(reused.iter().any(|a| freed.contains(a)), "the exited threads' objects were reused");
    per_cpu::release_all();
    let left = per_cpu::cached_bytes();
    assert!(left < 4096, "release_all drains every CPU: {left} bytes left");
    per_cpu::check_invariants();
}

#[test]
fn fork_while_other_threads_allocate() {
    let _serial = serial();
    let on = per_cpu_on();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(t + 7);
                let mut seq = 0;
                while !stop.load(Relaxed) {
                    let blocks: Vec<Block> = (0..32)
                        .map(|_| {
                            seq += 1;
                            Block::new(SIZES[rng.below(SIZES.len())], 8, t << 40 | seq << 8)
                        })
                        .collect();
                    blocks.into_iter().for_each(Block::free);
                    rounds.fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    while rounds.load(Relaxed) < 100 {
        std::thread::yield_now();
    }
    for child in 0..20u64 {
        // SAFETY: the child only allocates, frees and exits with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut rng = Rng(child + 100);
            let mut live: Vec<Block> = Vec::new();
            for i in 0..5000u64 {
                live.push(Block::new(SIZES[rng.below(SIZES.len())], 8, 1 << 60 | i << 8));
                if live.len() > 100 {
                    let b = live.swap_remove(rng.below(live.len()));
                    b.free();
                }
            }
            live.into_iter().for_each(Block::free);
            if on {
                per_cpu::check_invariants();
            }
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child {child} failed: status {status:#x}"
        );
    }
    stop.store(true, Relaxed);
    workers.into_iter().for_each(|w| w.join().unwrap());
}

/// Run as a child process by `without_rseq_the_thread_caches_serve`: allocates through
/// tcalloc with `rseq` unavailable (or the caches turned off) and checks that the per-CPU
/// caches stayed off.
#[test]
fn fallback_child() {
    let Ok(expected) = std::env::var("TCALLOC_TEST_PER_CPU_CHILD") else { return };
    assert!(!per_cpu_on(), "per-CPU caches on in the child ({expected})");
    let (give, take) = mpsc::channel();
    ring(4, 50, |_, _| {});
    churn(9, 50, give, take, |_| {});
    assert_eq!(per_cpu::cached_bytes(), 0);
    assert_eq!(per_cpu::current_cpu(), None);
    println!("per-CPU caches off: {expected}");
}

#[test]
fn without_rseq_the_thread_caches_serve() {
    let _serial = serial();
    per_cpu_on();
    let exe = std::env::current_exe().unwrap();
    for (name, value, why) in [
        ("GLIBC_TUNABLES", "glibc.pthread.rseq=0", "glibc did not register rseq"),
        ("TCALLOC_PER_CPU", "0", "turned off"),
    ] {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "fallback_child", "--nocapture", "--test-threads=1"])
            .env(name, value)
            .env("TCALLOC_TEST_PER_CPU_CHILD", why)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("per-CPU caches off: {why}")),
            "{name}={value}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
