/*
 * tcalloc — a thread-caching memory allocator.
 *
 * libtcalloc.so always exports the tcalloc_-prefixed functions and the memory-pool API below.
 * Built with `cargo build --release --features override`, it also exports the unprefixed
 * malloc family (malloc, free, calloc, realloc, reallocarray, posix_memalign, aligned_alloc,
 * memalign, valloc, pvalloc, malloc_usable_size), the rest of glibc's malloc API (malloc_trim,
 * mallinfo, mallinfo2, malloc_stats, malloc_info, mallopt), C23's free_sized and
 * free_aligned_sized, jemalloc's nallocx and sdallocx, and malloc_good_size, so that
 * LD_PRELOAD=libtcalloc.so replaces the system allocator of any program. The prefixed twins
 * have the same semantics, errno included. The heap-misuse checks (double frees, overwritten
 * free lists: README, "Heap misuse") are built in with `override` or `hardened`; a library
 * built with neither validates every pointer it is given but does not detect double frees.
 */
#ifndef TCALLOC_H
#define TCALLOC_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- The malloc family (prefixed twins of the glibc functions) ------------------------- */

void *tcalloc_malloc(size_t size);
void tcalloc_free(void *ptr);
void *tcalloc_calloc(size_t count, size_t size);
void *tcalloc_realloc(void *ptr, size_t size);
void *tcalloc_reallocarray(void *ptr, size_t count, size_t size);
int tcalloc_posix_memalign(void **out, size_t alignment, size_t size);
void *tcalloc_aligned_alloc(size_t alignment, size_t size);
void *tcalloc_memalign(size_t alignment, size_t size);
void *tcalloc_valloc(size_t size);
void *tcalloc_pvalloc(size_t size);
size_t tcalloc_malloc_usable_size(void *ptr);

/* ---- The rest of glibc's malloc API (prefixed twins) ------------------------------------ */

/* glibc's struct mallinfo2 and struct mallinfo (<malloc.h>), field for field. */
struct tcalloc_mallinfo2 {
    size_t arena;    /* bytes mapped for the page heap (every block up to 1 MiB lives there) */
    size_t ordblks;  /* free objects in the central lists */
    size_t smblks;   /* 0 */
    size_t hblks;    /* large blocks (above 1 MiB, each its own mapping) */
    size_t hblkhd;   /* bytes of large blocks */
    size_t usmblks;  /* 0 */
    size_t fsmblks;  /* bytes of free objects in thread caches */
    size_t uordblks; /* bytes of arena the program holds */
    size_t fordblks; /* arena - uordblks: free objects, free and released pages */
    size_t keepcost; /* what malloc_trim could give back now */
};
struct tcalloc_mallinfo {
    int arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};

/* Gives free memory back to the OS (as tcalloc_release_free_memory); 1 if any was released. */
int tcalloc_malloc_trim(size_t pad);
struct tcalloc_mallinfo2 tcalloc_mallinfo2(void);
/* As tcalloc_mallinfo2, each field saturated to INT_MAX. */
struct tcalloc_mallinfo tcalloc_mallinfo(void);
/* Prints tcalloc's report to standard error. */
void tcalloc_malloc_stats(void);
/* Writes an XML document in glibc's elements with tcalloc's figures; options must be 0. */
int tcalloc_malloc_info(int options, FILE *fp);
/* glibc's parameters: 1 or 0 as glibc answers (M_TRIM_THRESHOLD sets the free-page reserve). */
int tcalloc_mallopt(int param, int value);

/* ---- Sized frees and size queries ------------------------------------------------------ */

/* free(ptr) of a block allocated with `size` bytes: a size larger than the block aborts. */
void tcalloc_free_sized(void *ptr, size_t size);
/* free(ptr) of a block allocated with `alignment` and `size` (checked as above). */
void tcalloc_free_aligned_sized(void *ptr, size_t alignment, size_t size);
/* jemalloc's sdallocx: flags hold MALLOCX_LG_ALIGN(lg) in their low 6 bits. */
void tcalloc_sdallocx(void *ptr, size_t size, int flags);
/* The usable size a request of `size` bytes (aligned per flags) gets; 0 if impossible. */
size_t tcalloc_nallocx(size_t size, int flags);
/* The usable size malloc(size) gets. */
size_t tcalloc_malloc_good_size(size_t size);

#ifdef TCALLOC_OVERRIDE
/* With the override feature these exist under their own names too (glibc 2.36 does not
 * declare the C23 ones; jemalloc and macOS declare the others). Define TCALLOC_OVERRIDE
 * before including this header to declare them. */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);
void sdallocx(void *ptr, size_t size, int flags);
size_t nallocx(size_t size, int flags);
size_t malloc_good_size(size_t size);
#endif

/* ---- Statistics and control ------------------------------------------------------------ */

/* Prints a report of the allocator's memory to standard error. */
void tcalloc_stats_print(void);
/* Gives every free page back to the OS now. */
void tcalloc_release_free_memory(void);

/* ---- Memory pools (per-connection region allocator) ------------------------------------ */

struct mp_pool_s;

/* Creates a pool whose small blocks are `size` bytes. NULL on failure. */
struct mp_pool_s *mp_create_pool(size_t size);
/* Frees everything the pool holds, and the pool. NULL is ignored. */
void mp_destroy_pool(struct mp_pool_s *pool);
/* Frees the large blocks and rewinds the small ones for reuse. NULL is ignored. */
void mp_reset_pool(struct mp_pool_s *pool);
/* Allocates `size` bytes aligned to 16. */
void *mp_alloc(struct mp_pool_s *pool, size_t size);
/* Allocates `size` bytes with no alignment. */
void *mp_nalloc(struct mp_pool_s *pool, size_t size);
/* Allocates `size` zeroed bytes aligned to 16. */
void *mp_calloc(struct mp_pool_s *pool, size_t size);
/* Allocates `size` bytes aligned to `alignment` (a power of two). */
void *mp_memalign(struct mp_pool_s *pool, size_t size, size_t alignment);
/* Frees a large block of the pool early: 0 if `p` was one, -1 (and nothing done) otherwise. */
int mp_free(struct mp_pool_s *pool, void *p);

#ifdef __cplusplus
}
#endif

#endif /* TCALLOC_H */
