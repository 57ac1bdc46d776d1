//! Messages to standard error and fatal errors, without allocating.
//!
//! The allocator cannot use `eprintln!` (it may allocate, and it panics on failure), so text is
//! formatted into a fixed buffer on the stack and written with one `write(2)`.
//!
//! The bottom layer with `config`: it uses no other module (it calls `write` and `abort`
//! itself), so that every layer, `os` included, can report a broken invariant.

use core::fmt::{self, Write};

/// A fixed-capacity text buffer; text beyond its capacity is dropped.
pub struct StackBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    pub const fn new() -> Self {
        StackBuf { bytes: [0; N], len: 0 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> Default for StackBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes `tcalloc: <message>\n` to standard error.
pub fn message(args: fmt::Arguments<'_>) {
    let mut buf = StackBuf::<512>::new();
    let _ = buf.write_str("tcalloc: ");
    let _ = buf.write_fmt(args);
    let _ = buf.write_str("\n");
    write_stderr(buf.as_bytes());
}

/// Checks an invariant inside the allocator: on failure, prints `tcalloc: invariant broken:`
/// with the message and aborts. Unlike `assert!`, it never allocates (a panic would, and the
/// allocator may hold its own locks), so a broken invariant is reported instead of deadlocking.
macro_rules! invariant {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::diag::fatal(format_args!(
                "invariant broken at {}:{}: {}",
                file!(),
                line!(),
                format_args!($($arg)+)
            ))
        }
    };
}

/// [`invariant!`] for an equality; prints both sides.
macro_rules! invariant_eq {
    ($left:expr, $right:expr, $($arg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if *left != *right {
            $crate::diag::fatal(format_args!(
                "invariant broken at {}:{}: {} ({:?} != {:?})",
                file!(),
                line!(),
                format_args!($($arg)+),
                left,
                right
            ))
        }
    }};
}

/// [`invariant!`] in debug builds only: the allocator's `debug_assert!`. A plain
/// `debug_assert!` would panic, and a panic allocates (and may unwind through a held lock).
macro_rules! debug_invariant {
    ($cond:expr $(,)?) => {
        $crate::diag::debug_invariant!($cond, "{}", stringify!($cond))
    };
    ($cond:expr, $($arg:tt)+) => {
        if cfg!(debug_assertions) {
            $crate::diag::invariant!($cond, $($arg)+)
        }
    };
}

pub(crate) use {debug_invariant, invariant, invariant_eq};

/// Writes `tcalloc: <message>` to standard error and aborts the process.
#[cold]
#[inline(never)]
pub fn fatal(args: fmt::Arguments<'_>) -> ! {
    message(args);
    abort()
}

/// Aborts with `tcalloc: <caller>(): double free 0x...`.
#[cold]
#[inline(never)]
pub fn double_free(caller: &'static str, ptr: *mut u8) -> ! {
    fatal(format_args!("{caller}(): double free {ptr:p}"))
}

/// Writes `bytes` to standard error, retrying short writes and ignoring failures.
pub fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the buffer is valid for `bytes.len()` bytes.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Ends the process at once (`SIGABRT`), without unwinding or running handlers.
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_buffer_truncates() {
        let mut buf = StackBuf::<8>::new();
        write!(buf, "{}-{}", 1234, 56789).unwrap();
        assert_eq!(buf.as_bytes(), b"1234-567");
    }
}
