//! Runs one whole-program workload with tcalloc as the global allocator (see
//! `tcalloc_bench::programs`).

#[global_allocator]
static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;

fn main() {
    tcalloc_bench::programs::worker_main(&GLOBAL);
}
