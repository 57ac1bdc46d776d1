//! Runs one whole-program workload with jemalloc as the global allocator (see
//! `tcalloc_bench::programs`).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    tcalloc_bench::programs::worker_main(&GLOBAL);
}
