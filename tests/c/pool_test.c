/*
 * The mp_* memory-pool API of libtcalloc.so, linked directly (-ltcalloc). Prints one line per
 * check and exits 0 only if all passed. Run by tests/c_library.rs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tcalloc.h"

static int failures;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        int passed_ = (cond);                                                              \
        printf(passed_ ? "ok   " : "FAIL ");                                               \
        if (!passed_) failures++;                                                          \
        printf(__VA_ARGS__);                                                               \
        printf("\n");                                                                      \
    } while (0)

static long resident_kib(void) {
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * 4;
}

struct block {
    uintptr_t start;
    size_t size;
};

static int by_start(const void *a, const void *b) {
    uintptr_t x = ((const struct block *)a)->start, y = ((const struct block *)b)->start;
    return x < y ? -1 : x > y;
}

/* A pool handed from thread to thread (used by one at a time, as a connection moving between
 * workers): a worker creates and fills it, another thread reads the values back. */
enum { EXCHANGED = 64, WORDS = 16, LARGE = 100000 };
struct exchange {
    int id;
    struct mp_pool_s *pool;
    int *values[EXCHANGED];
    unsigned char *large;
};

static int value_of(int id, int i, int k) { return id * 1000000 + i * 100 + k; }

/* Allocates and writes the values of `x` in its pool. */
static void fill(struct exchange *x) {
    for (int i = 0; i < EXCHANGED; i++) {
        x->values[i] = mp_alloc(x->pool, WORDS * sizeof(int));
        if (x->values[i])
            for (int k = 0; k < WORDS; k++) x->values[i][k] = value_of(x->id, i, k);
    }
    x->large = mp_alloc(x->pool, LARGE);
    if (x->large) memset(x->large, x->id, LARGE);
}

/* A worker thread: creates the pool of `arg` and fills it. */
static void *create_and_fill(void *arg) {
    struct exchange *x = arg;
    x->pool = mp_create_pool(1024);
    if (x->pool) fill(x);
    return NULL;
}

/* 1 if every value the worker wrote for `x` reads back. */
static int read_back(const struct exchange *x) {
    if (!x->pool || !x->large) return 0;
    for (int i = 0; i < EXCHANGED; i++) {
        if (!x->values[i]) return 0;
        for (int k = 0; k < WORDS; k++)
            if (x->values[i][k] != value_of(x->id, i, k)) return 0;
    }
    for (size_t k = 0; k < LARGE; k++)
        if (x->large[k] != (unsigned char)x->id) return 0;
    return 1;
}

enum { N = 40000 };
static struct block blocks[N];
static void *larges[N];

int main(void) {
    /* Edge cases. */
    errno = 0;
    CHECK(mp_alloc(NULL, 10) == NULL && errno == EINVAL, "mp_alloc(NULL, n) is NULL with EINVAL");
    CHECK(mp_free(NULL, (void *)16) == -1, "mp_free(NULL, p) is -1");
    errno = 0;
    mp_reset_pool(NULL);
    mp_destroy_pool(NULL);
    CHECK(errno == 0, "mp_reset_pool(NULL) and mp_destroy_pool(NULL) do nothing (errno untouched)");
    struct mp_pool_s *zero = mp_create_pool(0);
    CHECK(zero != NULL, "mp_create_pool(0) gives a pool with the default size");
    void *z1 = mp_alloc(zero, 0), *z2 = mp_alloc(zero, 0);
    CHECK(z1 && z2 && z1 != z2, "mp_alloc(pool, 0) gives unique pointers");
    errno = 0;
    CHECK(mp_memalign(zero, 10, 48) == NULL && errno == EINVAL, "mp_memalign with alignment 48 is EINVAL");
    errno = 0;
    CHECK(mp_alloc(zero, SIZE_MAX - 100) == NULL && errno == ENOMEM, "an impossible size is ENOMEM");
    CHECK(mp_free(zero, z1) == -1, "mp_free of a small block is -1");
    mp_destroy_pool(zero);

    /* Tens of thousands of mixed requests, none overlapping. */
    struct mp_pool_s *pool = mp_create_pool(4096);
    struct mp_pool_s *other = mp_create_pool(4096);
    int aligned_ok = 1, zero_ok = 1, nl = 0;
    unsigned seed = 12345;
    for (int i = 0; i < N; i++) {
        seed = seed * 1103515245 + 12345;
        unsigned kind = (seed >> 16) % 10;
        size_t size = 1 + (seed >> 8) % 700;
        void *p;
        if (kind < 4) {
            p = mp_alloc(pool, size);
            aligned_ok &= ((uintptr_t)p & 15) == 0;
        } else if (kind < 6) {
            p = mp_nalloc(pool, size);
        } else if (kind < 7) {
            p = mp_calloc(pool, size);
            for (size_t k = 0; k < size; k++) zero_ok &= ((unsigned char *)p)[k] == 0;
        } else if (kind < 9) {
            size_t align = (size_t)1 << ((seed >> 4) % 13);
            p = mp_memalign(pool, size, align);
            aligned_ok &= ((uintptr_t)p & (align - 1)) == 0;
        } else {
            size = 5000 + (seed >> 8) % 100000;
            p = mp_alloc(pool, size);
            larges[nl++] = p;
        }
        memset(p, i & 0xff, size);
        blocks[i].start = (uintptr_t)p;
        blocks[i].size = size;
    }
    CHECK(aligned_ok, "mp_alloc is 16-aligned, mp_memalign honours alignments up to 4 KiB");
    CHECK(zero_ok, "mp_calloc memory is zero");
    qsort(blocks, N, sizeof blocks[0], by_start);
    int overlap = 0;
    for (int i = 1; i < N; i++) overlap |= blocks[i - 1].start + blocks[i - 1].size > blocks[i].start;
    CHECK(!overlap, "%d blocks, none overlapping", N);

    /* mp_free answers. */
    CHECK(mp_free(other, larges[0]) == -1, "mp_free of another pool's large block is -1");
    CHECK(mp_free(pool, larges[0]) == 0, "mp_free of a large block is 0");
    CHECK(mp_free(pool, larges[0]) == -1, "mp_free of it again is -1");
    CHECK(mp_free(pool, (char *)larges[1] + 8) == -1, "mp_free inside a large block is -1");
    int all = 1;
    for (int i = 1; i < nl; i++) all &= mp_free(pool, larges[i]) == 0;
    CHECK(all, "the other %d large blocks free", nl - 1);

    /* Many resets: resident memory stays flat. */
    long before = resident_kib();
    for (int round = 0; round < 3000; round++) {
        for (int i = 0; i < 300; i++) {
            char *s = mp_nalloc(pool, 1 + i % 90);
            s[0] = (char)i;
        }
        void *big = mp_alloc(pool, 64 * 1024);
        memset(big, 1, 64 * 1024);
        mp_reset_pool(pool);
    }
    long after = resident_kib();
    CHECK(after - before < 4096, "3000 resets: RSS %ld KiB -> %ld KiB", before, after);
    mp_destroy_pool(pool);
    mp_destroy_pool(other);

    /* Pools filled in worker threads, read back, freed, reset and destroyed in this one. */
    enum { THREADS = 4 };
    struct exchange xs[THREADS];
    pthread_t workers[THREADS];
    int started[THREADS], intact = 1, freed = 1, reused = 1;
    for (int t = 0; t < THREADS; t++) {
        memset(&xs[t], 0, sizeof xs[t]);
        xs[t].id = t + 1;
        started[t] = pthread_create(&workers[t], NULL, create_and_fill, &xs[t]) == 0;
    }
    for (int t = 0; t < THREADS; t++)
        if (started[t]) pthread_join(workers[t], NULL);
    for (int t = 0; t < THREADS; t++) intact &= read_back(&xs[t]);
    CHECK(intact, "%d pools filled in worker threads read back intact in the main thread", THREADS);
    for (int t = 0; t < THREADS; t++) {
        freed &= mp_free(xs[t].pool, xs[t].large) == 0;
        mp_reset_pool(xs[t].pool);
        xs[t].id += THREADS;
        fill(&xs[t]);
        reused &= read_back(&xs[t]);
        mp_destroy_pool(xs[t].pool);
    }
    CHECK(freed, "their large blocks free with mp_free in the main thread");
    CHECK(reused, "after mp_reset_pool in the main thread they serve and read back new values");

    /* Thousands of pools created and destroyed. */
    before = resident_kib();
    for (int round = 0; round < 5000; round++) {
        struct mp_pool_s *p = mp_create_pool(1024 + (round % 7) * 1000);
        for (int i = 0; i < 40; i++) memset(mp_alloc(p, 20 + i * 11), 1, 20 + i * 11);
        memset(mp_alloc(p, 10000), 2, 10000);
        mp_destroy_pool(p);
    }
    after = resident_kib();
    CHECK(after - before < 4096, "5000 pools created and destroyed: RSS %ld KiB -> %ld KiB", before, after);

    printf("%d failure(s)\n", failures);
    return failures == 0 ? 0 : 1;
}
