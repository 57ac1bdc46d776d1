//! Installs tcalloc as the global allocator, does some ordinary work, and prints what the
//! allocator did.
//!
//! `cargo run --release --example hello`

use std::collections::HashMap;

#[global_allocator]
static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;

fn main() {
    let words: Vec<String> = (0..200_000).map(|i| format!("word{}", i % 5000)).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in &words {
        *counts.entry(w).or_default() += 1;
    }
    let big = vec![7u8; 64 << 20];
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                (0..100_000).filter(|i| !vec![t; i % 100].is_empty()).count()
            })
        })
        .collect();
    let made: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    println!(
        "counted {} distinct words, {} per word; {} MiB block; {} vectors on 4 threads",
        counts.len(),
        counts["word42"],
        big.len() >> 20,
        made
    );
    println!("\nwhile all of that is live:\n{}", tcalloc::stats());
    drop(counts);
    drop((words, big));
    tcalloc::release_free_memory();
    println!("\nafter freeing it and tcalloc::release_free_memory():\n{}", tcalloc::stats());
}
