//! Installs `TcAlloc` as the global allocator of this test binary and runs ordinary std code:
//! collections, strings, formatting, threads, channels. Everything the test harness itself
//! does (spawning test threads, capturing output) runs on tcalloc too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{mpsc, Arc, Mutex};

#[global_allocator]
static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;

#[test]
fn collections_and_strings() {
    let mut map: HashMap<String, Vec<u32>> = HashMap::new();
    for i in 0..20_000u32 {
        map.entry(format!("key-{}", i % 1000)).or_default().push(i);
    }
    assert_eq!(map.len(), 1000);
    assert_eq!(map["key-7"].len(), 20);
    assert_eq!(map["key-7"].iter().sum::<u32>(), (0..20).map(|k| 7 + 1000 * k).sum());

    let mut tree = BTreeMap::new();
    for i in (0..10_000).rev() {
        tree.insert(i, i.to_string().repeat(i % 7 + 1));
    }
    assert_eq!(
        tree.range(100..105).map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![100, 101, 102, 103, 104]
    );
    assert_eq!(tree[&45], "45".repeat(45 % 7 + 1));

    let mut text = String::new();
    for word in ["alpha", "beta", "gamma"].iter().cycle().take(30_000) {
        text.push_str(word);
        text.push(' ');
    }
    assert_eq!(text.split_whitespace().filter(|w| *w == "beta").count(), 10_000);

    let mut deque: VecDeque<Box<[u8]>> = VecDeque::new();
    for i in 0..5000usize {
        deque.push_back(vec![(i % 256) as u8; i % 3000 + 1].into_boxed_slice());
        if deque.len() > 100 {
            let b = deque.pop_front().unwrap();
            assert!(b.iter().all(|&x| x == b[0]));
        }
    }
    let mut v: Vec<u64> = Vec::new();
    for i in 0..1_000_000 {
        v.push(i);
    }
    v.shrink_to_fit();
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).collect::<Vec<_>>());
}

#[test]
fn threads_and_channels() {
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    tx.send(vec![format!("{t}:{i}"); i % 5 + 1]).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut total = 0;
    for msg in rx {
        assert!(msg.iter().all(|s| s == &msg[0]));
        total += msg.len();
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(total, 4 * (0..2000).map(|i| i % 5 + 1).sum::<usize>());

    let shared = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let local: Vec<Box<u64>> = (0..1000).map(|i| Box::new(t * 1000 + i)).collect();
                shared.lock().unwrap().extend(local);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut all: Vec<u64> = shared.lock().unwrap().drain(..).map(|b| *b).collect();
    all.sort_unstable();
    assert_eq!(all, (0..8000).collect::<Vec<_>>());
}

#[test]
fn many_short_lived_threads() {
    for round in 0..20 {
        let handles: Vec<_> =
            (0..50).map(|i| std::thread::spawn(move || vec![round * 50 + i; 100])).collect();
        for (i, h) in handles.into_iter().enumerate() {
            let v = h.join().unwrap();
            assert_eq!(v.len(), 100);
            assert!(v.iter().all(|&x| x == round * 50 + i));
        }
    }
}
