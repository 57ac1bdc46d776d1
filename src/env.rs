//! Settings read from the environment once, at start-up, without allocating.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `TCALLOC_SHOW_STATS` | `0` | `1`: print the statistics report to stderr at exit |
//! | `TCALLOC_RELEASE_RATE` | `1` | how eagerly free memory goes back to the OS: `0` never (only `release_free_memory`), `1` the defaults below, `r` divides the reserve and the decay time by `r` |
//! | `TCALLOC_FREE_RESERVE_BYTES` | 16 MiB | free pages the page heap keeps backed; beyond that, freed pages go back at once |
//! | `TCALLOC_DECAY_MS` | `1000` | free pages and cached large mappings idle this long go back to the OS |
//! | `TCALLOC_MAX_TOTAL_THREAD_CACHE_BYTES` | 64 MiB | cap on all thread caches together (a thread gets an equal share, between 512 KiB and 4 MiB, or up to 16 MiB while it is the only thread with a cache) |
//! | `TCALLOC_MAX_TRANSFER_CACHE_BYTES` | 16 MiB | cap on the batches of free objects waiting between thread caches, all size classes together (`0`: none wait there) |
//! | `TCALLOC_HUGE_PAGE_HEAP_BYTES` | 64 MiB | heap size from which the page heap builds a transparent huge page (`MADV_COLLAPSE`) wherever it carves from pages given back or never touched; a value above any heap (`1024g`) keeps it on small pages |
//! | `TCALLOC_ARENA_BYTES` | 32 GiB | address space the page heap reserves for its arena (at most 32 GiB; below 64 MiB, `0` included, none) |
//!
//! Byte values accept a `k`, `m` or `g` suffix (powers of 1024). A malformed value is ignored
//! with a one-line warning on stderr.

use crate::diag;
use core::ffi::CStr;

/// The settings, after defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub show_stats: bool,
    pub release_rate: f64,
    pub free_reserve_bytes: usize,
    pub decay_ms: u64,
    pub total_thread_cache_bytes: usize,
    pub huge_page_heap_bytes: usize,
    /// `None`: the default, [`TRANSFER_CACHE_BYTES`](crate::config::TRANSFER_CACHE_BYTES).
    pub transfer_cache_bytes: Option<usize>,
}

impl Settings {
    pub const DEFAULT: Settings = Settings {
        show_stats: false,
        release_rate: 1.0,
        free_reserve_bytes: 16 << 20,
        decay_ms: 1000,
        total_thread_cache_bytes: crate::config::TOTAL_THREAD_CACHE_BYTES,
        huge_page_heap_bytes: crate::config::HUGE_PAGE_HEAP_BYTES,
        transfer_cache_bytes: None,
    };

    /// Reads the environment (see the module docs).
    pub fn from_env() -> Settings {
        Self::from_lookup(|name| {
            // SAFETY: `name` is NUL-terminated; getenv returns null or a NUL-terminated string
            // that stays valid while the environment is not modified (start-up).
            unsafe {
                let value = libc::getenv(name.as_ptr());
                if value.is_null() {
                    None
                } else {
                    Some(CStr::from_ptr(value).to_bytes())
                }
            }
        })
    }

    /// Builds settings from a lookup function (the seam for tests).
    pub fn from_lookup<'a>(lookup: impl Fn(&CStr) -> Option<&'a [u8]>) -> Settings {
        let mut s = Settings::DEFAULT;
        if let Some(v) = lookup(c"TCALLOC_SHOW_STATS") {
            match v {
                b"1" | b"true" | b"yes" => s.show_stats = true,
                b"0" | b"false" | b"no" | b"" => s.show_stats = false,
                _ => warn("TCALLOC_SHOW_STATS", v),
            }
        }
        if let Some(v) = lookup(c"TCALLOC_RELEASE_RATE") {
            match parse_decimal(v) {
                Some(rate) => s.release_rate = rate,
                None => warn("TCALLOC_RELEASE_RATE", v),
            }
        }
        let bytes_vars: [(&CStr, &mut usize); 3] = [
            (c"TCALLOC_FREE_RESERVE_BYTES", &mut s.free_reserve_bytes),
            (c"TCALLOC_MAX_TOTAL_THREAD_CACHE_BYTES", &mut s.total_thread_cache_bytes),
            (c"TCALLOC_HUGE_PAGE_HEAP_BYTES", &mut s.huge_page_heap_bytes),
        ];
        for (name, slot) in bytes_vars {
            if let Some(v) = lookup(name) {
                match parse_bytes(v) {
                    Some(n) => *slot = n,
                    None => warn(name.to_str().unwrap_or("?"), v),
                }
            }
        }
        if let Some(v) = lookup(c"TCALLOC_MAX_TRANSFER_CACHE_BYTES") {
            match parse_bytes(v) {
                Some(n) => s.transfer_cache_bytes = Some(n),
                None => warn("TCALLOC_MAX_TRANSFER_CACHE_BYTES", v),
            }
        }
        if let Some(v) = lookup(c"TCALLOC_DECAY_MS") {
            match parse_bytes(v) {
                Some(ms) => s.decay_ms = ms as u64,
                None => warn("TCALLOC_DECAY_MS", v),
            }
        }
        s
    }

    /// Free pages kept backed, after the release rate.
    pub fn effective_reserve_bytes(&self) -> usize {
        if self.release_rate <= 0.0 {
            usize::MAX
        } else {
            (self.free_reserve_bytes as f64 / self.release_rate) as usize
        }
    }

    /// Idle time before release, after the release rate; `None` when release is off.
    pub fn effective_decay_ms(&self) -> Option<u64> {
        if self.release_rate <= 0.0 {
            None
        } else {
            Some((self.decay_ms as f64 / self.release_rate) as u64)
        }
    }
}

/// `TCALLOC_ARENA_BYTES`, read when the page heap first grows (it may come before the rest of
/// the start-up): the arena's size before the page heap's own bounds, `default` when unset or
/// malformed (with a warning).
pub fn arena_bytes(default: usize) -> usize {
    // SAFETY: as in `Settings::from_env`.
    let value = unsafe { libc::getenv(c"TCALLOC_ARENA_BYTES".as_ptr()) };
    if value.is_null() {
        return default;
    }
    // SAFETY: a NUL-terminated string from getenv.
    let v = unsafe { CStr::from_ptr(value) }.to_bytes();
    parse_bytes(v).unwrap_or_else(|| {
        warn("TCALLOC_ARENA_BYTES", v);
        default
    })
}

#[cold]
fn warn(name: &str, value: &[u8]) {
    let shown = core::str::from_utf8(value).unwrap_or("(not UTF-8)");
    diag::message(format_args!("ignoring malformed {name}={shown:?}"));
}

/// A non-negative integer with an optional `k`/`m`/`g` suffix.
fn parse_bytes(v: &[u8]) -> Option<usize> {
    let (digits, shift) = match v.last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 10),
        b'm' | b'M' => (&v[..v.len() - 1], 20),
        b'g' | b'G' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: usize = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as usize)?;
    }
    n.checked_mul(1 << shift)
}

/// A non-negative decimal such as `0`, `2`, `0.5`.
fn parse_decimal(v: &[u8]) -> Option<f64> {
    let text = core::str::from_utf8(v).ok()?;
    let value: f64 = text.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &'static [(&'static str, &'static str)]) -> Settings {
        Settings::from_lookup(|name| {
            vars.iter().find(|(k, _)| k.as_bytes() == name.to_bytes()).map(|(_, v)| v.as_bytes())
        })
    }

    #[test]
    fn defaults_without_variables() {
        assert_eq!(settings(&[]), Settings::DEFAULT);
    }

    #[test]
    fn values_are_parsed() {
        let s = settings(&[
            ("TCALLOC_SHOW_STATS", "1"),
            ("TCALLOC_RELEASE_RATE", "2.5"),
            ("TCALLOC_FREE_RESERVE_BYTES", "8m"),
            ("TCALLOC_MAX_TOTAL_THREAD_CACHE_BYTES", "1G"),
            ("TCALLOC_DECAY_MS", "250"),
            ("TCALLOC_MAX_TRANSFER_CACHE_BYTES", "512k"),
            ("TCALLOC_HUGE_PAGE_HEAP_BYTES", "1024g"),
        ]);
        assert_eq!(s.huge_page_heap_bytes, 1 << 40);
        assert!(s.show_stats);
        assert_eq!(s.transfer_cache_bytes, Some(512 << 10));
        assert_eq!(s.release_rate, 2.5);
        assert_eq!(s.free_reserve_bytes, 8 << 20);
        assert_eq!(s.total_thread_cache_bytes, 1 << 30);
        assert_eq!(s.decay_ms, 250);
        assert_eq!(s.effective_decay_ms(), Some(100));
        assert_eq!(s.effective_reserve_bytes(), (8 << 20) * 2 / 5);
    }

    #[test]
    fn malformed_values_are_ignored() {
        let s = settings(&[
            ("TCALLOC_SHOW_STATS", "maybe"),
            ("TCALLOC_RELEASE_RATE", "-1"),
            ("TCALLOC_FREE_RESERVE_BYTES", "12x"),
            ("TCALLOC_MAX_TOTAL_THREAD_CACHE_BYTES", "99999999999999999999999g"),
            ("TCALLOC_DECAY_MS", ""),
        ]);
        assert_eq!(s, Settings::DEFAULT);
        let off = settings(&[("TCALLOC_RELEASE_RATE", "0")]);
        assert_eq!(off.effective_decay_ms(), None);
        assert_eq!(off.effective_reserve_bytes(), usize::MAX);
    }
}
