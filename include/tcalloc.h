/*
 * tcalloc — a thread-caching memory allocator.
 *
 * libtcalloc.so always exports the tcalloc_-prefixed functions and the memory-pool API below.
 * Built with `cargo build --release --features override`, it also exports the unprefixed
 * malloc family (malloc, free, calloc, realloc, reallocarray, posix_memalign, aligned_alloc,
 * memalign, valloc, pvalloc, malloc_usable_size), so that LD_PRELOAD=libtcalloc.so replaces
 * the system allocator of any program. The prefixed twins have the same glibc semantics,
 * errno included.
 */
#ifndef TCALLOC_H
#define TCALLOC_H

#include <stddef.h>

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
