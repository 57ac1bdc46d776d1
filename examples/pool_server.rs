//! A small request-handling loop in the style of a web server: every simulated connection
//! gets a `tcalloc::Pool`; each request's parsed headers, path segments, response and a
//! per-request trace (a value with a destructor, borrowing the server's name) are allocated
//! from it; the pool is reset between requests (dropping the trace) and dropped with the
//! connection. The server's name outlives every pool, as `Pool<'s>` requires of what the
//! pool's values borrow.
//!
//! `cargo run --release --example pool_server`

use std::time::Instant;
use tcalloc::Pool;

#[global_allocator]
static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;

/// A parsed request: every piece lives in the connection's pool.
struct Request<'p> {
    method: &'p str,
    segments: &'p [&'p str],
    headers: &'p [(&'p str, &'p str)],
}

/// Per-request state with a destructor, kept in the pool and dropped by its reset.
struct Trace<'s> {
    server: &'s str,
    steps: Vec<&'static str>,
}

fn raw_request(conn: usize, n: usize) -> String {
    format!(
        "GET /api/v1/users/{conn}/items/{n}?page={} HTTP/1.1\r\nHost: example.com\r\n\
         User-Agent: bench/1.0\r\nAccept: application/json\r\nCookie: session={conn:08x}{n:08x}\r\n\
         X-Request-Id: {conn}-{n}\r\n\r\n",
        n % 10
    )
}

fn parse<'p>(pool: &'p Pool<'_>, raw: &str) -> Request<'p> {
    let mut lines = raw.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let method = pool.alloc_str(parts.next().unwrap_or(""));
    let path = parts.next().unwrap_or("/");
    let segments: Vec<&'p str> =
        path.split(['/', '?']).filter(|s| !s.is_empty()).map(|s| &*pool.alloc_str(s)).collect();
    let headers: Vec<(&'p str, &'p str)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (&*pool.alloc_str(&k.to_ascii_lowercase()), &*pool.alloc_str(v)))
        .collect();
    Request {
        method,
        segments: pool.alloc_slice_copy(&segments),
        headers: pool.alloc_slice_copy(&headers),
    }
}

fn respond<'p>(pool: &'p Pool<'_>, req: &Request<'p>, trace: &mut Trace<'_>) -> &'p str {
    trace.steps.push("respond");
    let host = req.headers.iter().find(|(k, _)| *k == "host").map_or("-", |h| h.1);
    let body = format!(
        "{{\"method\":\"{}\",\"path\":[{}],\"host\":\"{host}\",\"headers\":{}}}",
        req.method,
        req.segments.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(","),
        req.headers.len()
    );
    pool.alloc_str(&format!(
        "HTTP/1.1 200 OK\r\nServer: {}\r\nX-Steps: {}\r\nContent-Length: {}\r\n\r\n{body}",
        trace.server,
        trace.steps.join(","),
        body.len()
    ))
}

fn main() {
    let connections = 2_000;
    let requests_per_connection = 50;
    let start = Instant::now();
    let mut bytes = 0;
    let mut peak_blocks = 0;
    let server = String::from("tcalloc-example/1.0");
    for conn in 0..connections {
        // `Pool<'s>` with `'s` the borrow of `server`: declared after it, dropped before it.
        let mut pool = Pool::with_block_size(4096);
        for n in 0..requests_per_connection {
            let raw = raw_request(conn, n);
            let trace = pool.alloc(Trace { server: &server, steps: Vec::with_capacity(4) });
            let req = parse(&pool, &raw);
            trace.steps.push("parse");
            let response = respond(&pool, &req, trace);
            bytes += response.len();
            peak_blocks = peak_blocks.max(pool.stats().blocks);
            pool.reset();
        }
    }
    let elapsed = start.elapsed();
    let total = connections * requests_per_connection;
    println!(
        "{total} requests on {connections} connections in {:.0} ms ({:.2} us per request), \
         {bytes} response bytes; at most {peak_blocks} pool blocks per connection",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / total as f64
    );
    let s = tcalloc::stats();
    println!("tcalloc after the last connection: {} bytes in use", s.allocated_bytes);
}
