//! Intrusive singly linked lists of free objects: the first word of a free object points to
//! the next one. Thread caches, central lists and spans all hold their free objects this way,
//! so a free object costs no metadata.

use core::ptr;

/// A free object: only its first word is used, as the link.
#[repr(C)]
pub struct FreeObject {
    pub next: *mut FreeObject,
}

/// Pushes `object` in front of `*head`.
///
/// # Safety
/// - `object` is valid for writes of a pointer and is not on any list.
#[inline(always)]
pub unsafe fn push(head: &mut *mut FreeObject, object: *mut FreeObject) {
    // SAFETY: the caller guarantees `object` is writable.
    unsafe { (*object).next = *head };
    *head = object;
}

/// Pops the first object of `*head`, or null if the list is empty.
///
/// # Safety
/// - `*head` is null or the head of a well-formed, null-terminated list.
#[inline(always)]
pub unsafe fn pop(head: &mut *mut FreeObject) -> *mut FreeObject {
    let object = *head;
    if !object.is_null() {
        // SAFETY: a non-null head of a well-formed list is a readable free object.
        *head = unsafe { (*object).next };
    }
    object
}

/// Detaches the first `n` objects of `*head` (which must hold at least `n`) and returns them
/// as a null-terminated list.
///
/// # Safety
/// - `*head` is a well-formed list with at least `n >= 1` objects.
pub unsafe fn split_front(head: &mut *mut FreeObject, n: usize) -> *mut FreeObject {
    debug_assert!(n >= 1);
    let first = *head;
    let mut last = first;
    for _ in 1..n {
        // SAFETY: the list holds at least `n` objects, so the first `n - 1` have successors.
        last = unsafe { (*last).next };
    }
    // SAFETY: `last` is the `n`-th object of the list.
    unsafe {
        *head = (*last).next;
        (*last).next = ptr::null_mut();
    }
    first
}

/// Like [`split_front`], and also returns the spread of the detached objects' addresses
/// (highest minus lowest): how scattered through memory they are.
///
/// # Safety
/// - `*head` is a well-formed list with at least `n >= 1` objects.
pub unsafe fn split_front_with_spread(
    head: &mut *mut FreeObject,
    n: usize,
) -> (*mut FreeObject, usize) {
    debug_assert!(n >= 1);
    let first = *head;
    let mut last = first;
    let (mut low, mut high) = (first as usize, first as usize);
    for _ in 1..n {
        // SAFETY: the list holds at least `n` objects, so the first `n - 1` have successors.
        last = unsafe { (*last).next };
        low = low.min(last as usize);
        high = high.max(last as usize);
    }
    // SAFETY: `last` is the `n`-th object of the list.
    unsafe {
        *head = (*last).next;
        (*last).next = ptr::null_mut();
    }
    (first, high - low)
}

/// Number of objects on a list (walks it; for checks and tests).
///
/// # Safety
/// - `head` is null or the head of a well-formed list.
pub unsafe fn count(mut head: *mut FreeObject) -> usize {
    let mut n = 0;
    while !head.is_null() {
        n += 1;
        // SAFETY: every object of a well-formed list is readable.
        head = unsafe { (*head).next };
    }
    n
}

/// The last object of a non-empty list.
///
/// # Safety
/// - `head` is the non-null head of a well-formed list.
pub unsafe fn last(mut head: *mut FreeObject) -> *mut FreeObject {
    loop {
        // SAFETY: every object of a well-formed list is readable.
        let next = unsafe { (*head).next };
        if next.is_null() {
            return head;
        }
        head = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_split_count() {
        let mut objects: Vec<FreeObject> =
            (0..10).map(|_| FreeObject { next: ptr::null_mut() }).collect();
        let mut head = ptr::null_mut();
        for o in objects.iter_mut() {
            // SAFETY: each object is a distinct live Vec element, on no list yet.
            unsafe { push(&mut head, o) };
        }
        // SAFETY: the list was built just above from live objects.
        unsafe {
            assert_eq!(count(head), 10);
            assert_eq!(last(head), &mut objects[0] as *mut _, "the first pushed is last");
            let front = split_front(&mut head, 4);
            assert_eq!(count(front), 4);
            assert_eq!(count(head), 6);
            assert_eq!(front, &mut objects[9] as *mut _);
            assert_eq!(pop(&mut head), &mut objects[5] as *mut _);
            assert_eq!(count(head), 5);
            let (rest, spread) = split_front_with_spread(&mut head, 5);
            assert!(head.is_null());
            assert_eq!(count(rest), 5);
            let (a, b) = (&objects[0] as *const _ as usize, &objects[4] as *const _ as usize);
            assert_eq!(spread, b - a, "objects 0..5 were on the list");
            assert!(pop(&mut head).is_null());
        }
    }
}
