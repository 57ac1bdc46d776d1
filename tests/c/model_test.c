/*
 * Model-based randomised test of libtcalloc.so's C entry points, run under LD_PRELOAD by
 * tests/c_library.rs (the same model as tests/model.rs, written again in C).
 *
 * usage: model_test [SEED [SEEDS [OPS [CLASSES]]]]
 *   SEED     first seed (default 1)          SEEDS  how many seeds from SEED (default 1)
 *   OPS      operations per thread (20000)   CLASSES  comma-separated class sizes (the test
 *            passes tcalloc's table; the default is the same rule computed here)
 *
 * Four threads each run a seeded random mix of malloc, calloc, realloc (growing and shrinking
 * across classes, page runs and large blocks, realloc(NULL, n) and realloc(p, 0)),
 * posix_memalign, aligned_alloc, memalign, valloc and free, with sizes from 0 to 4 MiB
 * (weighted toward small sizes and toward every class, page and 1 MiB boundary) and alignments
 * from 1 B to 64 KiB; phase changes (bulk-allocate one layout, free a random 90%, switch to
 * another, often the next size down with a larger alignment); blocks handed between threads
 * (freed or reallocated by a thread that did not allocate them); and short-lived threads
 * whose blocks outlive them. Checks, on every block an operation touches:
 *   - alignment (the requested one; malloc, calloc and realloc: 16, or 8 for 8 B or less);
 *   - malloc_usable_size(p) >= the size asked for, and the whole usable size is written with
 *     the block's pattern (so a usable size that reaches into a neighbour shows as a broken
 *     pattern in one of them);
 *   - contents: the pattern (derived from a per-block id) is checked before free, realloc and
 *     hand-over, and by periodic sweeps; realloc keeps the first min(old, new) bytes;
 *   - calloc memory is zero;
 *   - no overlap: every 1024 operations a thread stops all the others' bookkeeping, sorts
 *     every live block by address and checks that no two usable ranges overlap.
 * The first violation prints a message naming the seed and thread on stderr and exits 1.
 *
 * The test's own bookkeeping lives in mmap'd memory, not in the heap under test, so a broken
 * allocator cannot corrupt the model and make it fail somewhere unrelated.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KIB ((size_t)1024)
#define MIB (1024 * KIB)
#define MAX_SIZE (4 * MIB)
#define MAX_ALIGN (64 * KIB)
#define PAGE (8 * KIB)
#define LARGE_THRESHOLD MIB
#define THREADS 4

/* How much one worker holds (phases overshoot for a moment). */
#define LIVE_BLOCKS 1000
#define LIVE_BYTES (24 * MIB)
#define PHASE_BYTES (4 * MIB)
#define PHASE_BLOCKS 4000
/* Bookkeeping capacity of one list of blocks. */
#define LIST_CAP (1 << 16)

/* ---- failures ------------------------------------------------------------------------- */

static __thread char context[192];

static void fail(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "model_test: FAIL: %s: %s\n", context, msg);
    _exit(1);
}

/* ---- random choices ------------------------------------------------------------------- */

static uint64_t mix(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

struct rng { uint64_t s; };

static struct rng rng_new(uint64_t seed) { return (struct rng){mix(seed + 0x9E3779B97F4A7C15ull) | 1}; }

static uint64_t next_u64(struct rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

static uint64_t below(struct rng *r, uint64_t n) { return next_u64(r) % n; }
static size_t range(struct rng *r, size_t lo, size_t hi) { return lo + (size_t)below(r, hi - lo + 1); }
static int percent(struct rng *r, int p) { return below(r, 100) < (uint64_t)p; }

/* ---- sizes and alignments ------------------------------------------------------------- */

static size_t classes[512];
static size_t nclasses;

/* n - 1, n or n + 1 (never below 0). */
static size_t around(struct rng *r, size_t n) {
    size_t x = n + (size_t)below(r, 3);
    return x ? x - 1 : 0;
}

static size_t around_class(struct rng *r) { return around(r, classes[below(r, nclasses)]); }

static size_t pick_size(struct rng *r) {
    size_t size;
    uint64_t roll = below(r, 100);
    if (roll < 30) size = range(r, 1, 256);
    else if (roll < 45) size = range(r, 257, 1024);
    else if (roll < 65) size = around_class(r);
    else if (roll < 73) size = range(r, 1025, 64 * KIB);
    else if (roll < 80) size = around(r, PAGE * range(r, 1, MAX_SIZE / PAGE));
    else if (roll < 86) size = range(r, 64 * KIB, LARGE_THRESHOLD);
    else if (roll < 91) size = around(r, LARGE_THRESHOLD);
    else if (roll < 97) size = range(r, LARGE_THRESHOLD, MAX_SIZE);
    else {
        static const size_t edge[] = {0, 1, MAX_SIZE};
        size = edge[below(r, 3)];
    }
    return size > MAX_SIZE ? MAX_SIZE : size;
}

/* An alignment from 1 B to 64 KiB, mostly small. */
static size_t pick_align(struct rng *r) {
    uint64_t roll = below(r, 10);
    if (roll < 6) return (size_t)1 << below(r, 4);
    if (roll < 8) return (size_t)16 << below(r, 3);
    return (size_t)1 << range(r, 7, 16);
}

static size_t realloc_size(struct rng *r, size_t old) {
    size_t size;
    switch (below(r, 10)) {
    case 0: case 1: case 2: size = pick_size(r); break;
    case 3: size = old + range(r, 1, 64); break;
    case 4: { size_t d = range(r, 1, 64); size = old > d ? old - d : 0; } break;
    case 5: size = old / 2; break;
    case 6: size = old * 2 + (size_t)below(r, 4096); break;
    case 7: case 8: {
        /* The class boundary just above or below, or the large threshold. */
        size_t up = 0, down = 0;
        for (size_t i = 0; i < nclasses; i++) {
            if (classes[i] >= old && !up) up = classes[i];
            if (classes[i] < old) down = classes[i];
        }
        uint64_t which = below(r, 3);
        if (which == 0 && up) size = up + 1;
        else if (which == 1 && down) size = down;
        else size = around(r, LARGE_THRESHOLD);
    } break;
    default: size = old;
    }
    return size > MAX_SIZE ? MAX_SIZE : size;
}

/* ---- blocks and patterns -------------------------------------------------------------- */

enum how { MALLOC, CALLOC, REALLOC_NULL, POSIX_MEMALIGN, ALIGNED_ALLOC, MEMALIGN, VALLOC, REALLOC, HOWS };
static const char *how_name[HOWS] = {"malloc", "calloc", "realloc(NULL)", "posix_memalign",
                                     "aligned_alloc", "memalign", "valloc", "realloc"};

struct block {
    unsigned char *p;
    size_t size;   /* asked for */
    size_t usable; /* malloc_usable_size, all of it carries the pattern */
    size_t align;  /* the alignment the result must have */
    uint64_t id;
    int how;
};

static uint64_t pattern_word(uint64_t id, size_t index) {
    return mix(id * 0xD6E8FEB86659FD93ull ^ (uint64_t)index * 0x9E3779B97F4A7C15ull);
}

static unsigned char pattern_byte(uint64_t id, size_t offset) {
    return (unsigned char)(pattern_word(id, offset / 8) >> (8 * (offset % 8)));
}

/* Blocks up to 64 KiB carry the pattern whole; larger ones in their first and last 4 KiB and
 * one word every 256 bytes between. Range k of a block of `size` bytes: 1 if it exists. */
#define WHOLE_LIMIT (64 * KIB)
#define EDGE (4 * KIB)
#define STRIDE 256

static int range_at(size_t size, size_t k, size_t *start, size_t *end) {
    if (size <= WHOLE_LIMIT) {
        *start = 0;
        *end = size;
        return k == 0;
    }
    size_t middle = (size - 2 * EDGE + STRIDE - 1) / STRIDE;
    if (k == 0) {
        *start = 0;
        *end = EDGE;
    } else if (k <= middle) {
        *start = EDGE + (k - 1) * STRIDE;
        *end = *start + 8;
    } else if (k == middle + 1) {
        *start = size - EDGE;
        *end = size;
    } else {
        return 0;
    }
    return 1;
}

static void write_pattern(unsigned char *p, uint64_t id, size_t start, size_t end) {
    size_t o = start;
    while (o < end) {
        if (o % 8 == 0 && o + 8 <= end) {
            uint64_t w = pattern_word(id, o / 8); /* little-endian, as pattern_byte */
            memcpy(p + o, &w, 8);
            o += 8;
        } else {
            p[o] = pattern_byte(id, o);
            o++;
        }
    }
}

/* The first offset in start..end that differs from the pattern, or SIZE_MAX. */
static size_t find_mismatch(const unsigned char *p, uint64_t id, size_t start, size_t end) {
    size_t o = start;
    while (o < end) {
        if (o % 8 == 0 && o + 8 <= end) {
            uint64_t w;
            memcpy(&w, p + o, 8);
            if (w != pattern_word(id, o / 8)) {
                for (size_t i = o; i < o + 8; i++)
                    if (p[i] != pattern_byte(id, i)) return i;
            }
            o += 8;
        } else {
            if (p[o] != pattern_byte(id, o)) return o;
            o++;
        }
    }
    return SIZE_MAX;
}

static void fill(const struct block *b) {
    size_t s, e;
    for (size_t k = 0; range_at(b->usable, k, &s, &e); k++) write_pattern(b->p, b->id, s, e);
}

/* Checks the pattern of `b` (laid out for b->usable bytes, at address p) up to `upto`. */
static void check_at(const struct block *b, const unsigned char *p, size_t upto, const char *what) {
    size_t s, e;
    for (size_t k = 0; range_at(b->usable, k, &s, &e); k++) {
        if (e > upto) e = upto;
        if (s >= e) continue;
        size_t bad = find_mismatch(p, b->id, s, e);
        if (bad != SIZE_MAX)
            fail("%s: block #%llu at %p (%s, size %zu, usable %zu, align %zu) corrupted at byte %zu "
                 "(%p): 0x%02x, expected 0x%02x",
                 what, (unsigned long long)b->id, (void *)p, how_name[b->how], b->size, b->usable,
                 b->align, bad, (void *)(p + bad), p[bad], pattern_byte(b->id, bad));
    }
}

static void check(const struct block *b, const char *what) { check_at(b, b->p, SIZE_MAX, what); }

/* ---- bookkeeping ---------------------------------------------------------------------- */

static void *map(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        _exit(2);
    }
    return p;
}

struct list {
    struct block *items;
    size_t n;
};

static void list_push(struct list *l, struct block b) {
    if (l->n == LIST_CAP) fail("bookkeeping list full");
    l->items[l->n++] = b;
}

static struct block list_take(struct list *l, size_t i) {
    struct block b = l->items[i];
    l->items[i] = l->items[--l->n];
    return b;
}

struct counts {
    unsigned long allocs[HOWS], zeroed, frees, realloc_frees, reallocs, route_changes, sent,
        adopted, phases, phase_blocks, threads, sweeps, overlap_checks, by_route[4];
};

static void counts_add(struct counts *a, const struct counts *b) {
    for (int i = 0; i < HOWS; i++) a->allocs[i] += b->allocs[i];
    for (int i = 0; i < 4; i++) a->by_route[i] += b->by_route[i];
    a->zeroed += b->zeroed;
    a->frees += b->frees;
    a->realloc_frees += b->realloc_frees;
    a->reallocs += b->reallocs;
    a->route_changes += b->route_changes;
    a->sent += b->sent;
    a->adopted += b->adopted;
    a->phases += b->phases;
    a->phase_blocks += b->phase_blocks;
    a->threads += b->threads;
    a->sweeps += b->sweeps;
    a->overlap_checks += b->overlap_checks;
}

/* Where tcalloc serves a block: small class, larger class, page run, large. */
static int route(size_t size, size_t align) {
    if (size > LARGE_THRESHOLD) return 3;
    if (align > PAGE) return 2;
    return size > 1024;
}

struct worker {
    int index; /* -1: a short-lived thread, not part of the overlap check */
    struct rng rng;
    char name[160];
    /* Guards live and inbox against the overlap check and against senders. */
    pthread_mutex_t lock;
    struct list live, inbox;
    size_t live_bytes;
    size_t phase_size, phase_align;
    struct counts counts;
};

static struct worker workers[THREADS];
static pthread_mutex_t overlap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct block *snapshot;

static void keep(struct worker *w, struct block b) {
    pthread_mutex_lock(&w->lock);
    list_push(&w->live, b);
    pthread_mutex_unlock(&w->lock);
    w->live_bytes += b.size;
}

static struct block take(struct worker *w, size_t i) {
    pthread_mutex_lock(&w->lock);
    struct block b = list_take(&w->live, i);
    pthread_mutex_unlock(&w->lock);
    w->live_bytes -= b.size;
    return b;
}

static struct block take_random(struct worker *w) { return take(w, below(&w->rng, w->live.n)); }

static int by_address(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const struct block *)a)->p, y = (uintptr_t)((const struct block *)b)->p;
    return x < y ? -1 : x > y;
}

/* Sorts every block the workers hold and checks that no two usable ranges overlap. */
static void check_no_overlap(struct worker *self) {
    pthread_mutex_lock(&overlap_lock);
    size_t n = 0;
    for (int i = 0; i < THREADS; i++) pthread_mutex_lock(&workers[i].lock);
    for (int i = 0; i < THREADS; i++) {
        memcpy(snapshot + n, workers[i].live.items, workers[i].live.n * sizeof(struct block));
        n += workers[i].live.n;
        memcpy(snapshot + n, workers[i].inbox.items, workers[i].inbox.n * sizeof(struct block));
        n += workers[i].inbox.n;
    }
    for (int i = THREADS - 1; i >= 0; i--) pthread_mutex_unlock(&workers[i].lock);
    qsort(snapshot, n, sizeof(struct block), by_address);
    for (size_t i = 1; i < n; i++) {
        const struct block *a = &snapshot[i - 1], *b = &snapshot[i];
        size_t a_len = a->usable ? a->usable : 1;
        if ((uintptr_t)a->p + a_len > (uintptr_t)b->p)
            fail("live blocks overlap: #%llu at %p (%s, usable %zu) and #%llu at %p (%s, usable %zu)",
                 (unsigned long long)a->id, (void *)a->p, how_name[a->how], a->usable,
                 (unsigned long long)b->id, (void *)b->p, how_name[b->how], b->usable);
    }
    pthread_mutex_unlock(&overlap_lock);
    self->counts.overlap_checks++;
}

/* ---- operations ----------------------------------------------------------------------- */

static uint64_t next_id_value;
static uint64_t fresh_id(void) { return __atomic_add_fetch(&next_id_value, 1, __ATOMIC_RELAXED); }

static size_t malloc_align(size_t size) { return size > 8 ? 16 : 8; }

/* Checks a block the allocator just handed out and writes its pattern. */
static struct block accept(struct worker *w, unsigned char *p, size_t size, size_t align, int how) {
    if (!p) fail("%s(size %zu, align %zu) returned NULL (errno %d)", how_name[how], size, align, errno);
    if ((uintptr_t)p % align)
        fail("%s(size %zu) returned %p, not %zu-aligned", how_name[how], size, (void *)p, align);
    struct block b = {p, size, malloc_usable_size(p), align, fresh_id(), how};
    if (b.usable < size)
        fail("malloc_usable_size(%p) = %zu after %s(size %zu)", (void *)p, b.usable, how_name[how], size);
    if (how == CALLOC) {
        for (size_t i = 0; i < size; i++)
            if (p[i]) fail("calloc(size %zu) = %p has byte %zu = 0x%02x", size, (void *)p, i, p[i]);
        w->counts.zeroed++;
    }
    fill(&b);
    w->counts.allocs[how]++;
    w->counts.by_route[route(size, align)]++;
    return b;
}

/* Allocates `size` bytes with the entry point `how`; `align` is the alignment asked for by the
 * aligned ones (a power of two; posix_memalign raises it to sizeof(void *)). */
static struct block alloc_with(struct worker *w, int how, size_t size, size_t align) {
    void *p = NULL;
    switch (how) {
    case MALLOC: p = malloc(size); align = malloc_align(size); break;
    case CALLOC: {
        size_t n = size ? range(&w->rng, 1, size < 64 ? size : 64) : 0;
        while (n > 1 && size % n) n--;
        p = n ? calloc(n, size / n) : calloc(0, 8 + (size_t)below(&w->rng, 8));
        align = malloc_align(size);
    } break;
    case REALLOC_NULL: p = realloc(NULL, size); align = malloc_align(size); break;
    case POSIX_MEMALIGN: {
        if (align < sizeof(void *)) align = sizeof(void *);
        int rc = posix_memalign(&p, align, size);
        if (rc) fail("posix_memalign(%zu, %zu) = %d", align, size, rc);
    } break;
    case ALIGNED_ALLOC: p = aligned_alloc(align, size); break;
    case MEMALIGN: p = memalign(align, size); break;
    case VALLOC: p = valloc(size); align = (size_t)sysconf(_SC_PAGESIZE); break;
    }
    return accept(w, p, size, align, how);
}

static struct block random_alloc(struct worker *w) {
    struct rng *r = &w->rng;
    size_t size = pick_size(r);
    uint64_t roll = below(r, 100);
    int how = roll < 35 ? MALLOC : roll < 50 ? CALLOC : roll < 55 ? REALLOC_NULL
              : roll < 70 ? POSIX_MEMALIGN : roll < 83 ? ALIGNED_ALLOC : roll < 97 ? MEMALIGN
                                                                       : VALLOC;
    return alloc_with(w, how, size, pick_align(r));
}

static void free_block(struct worker *w, struct block b) {
    check(&b, "before free");
    if (percent(&w->rng, 5)) {
        /* realloc(p, 0) frees and returns NULL, as glibc. */
        uintptr_t old = (uintptr_t)b.p;
        void *q = realloc(b.p, 0);
        if (q) fail("realloc(%#lx, 0) returned %p, not NULL", (unsigned long)old, q);
        w->counts.realloc_frees++;
    } else {
        free(b.p);
    }
    w->counts.frees++;
}

static struct block realloc_block(struct worker *w, struct block b) {
    check(&b, "before realloc");
    size_t size = realloc_size(&w->rng, b.size);
    if (size == 0) size = 1; /* realloc(p, 0) is a free, tested in free_block */
    uintptr_t old = (uintptr_t)b.p;
    unsigned char *p = realloc(b.p, size);
    if (!p) fail("realloc(#%llu %#lx, %zu) returned NULL", (unsigned long long)b.id, (unsigned long)old, size);
    char what[128];
    snprintf(what, sizeof what, "realloc(#%llu %#lx, size %zu -> %zu) = %p", (unsigned long long)b.id,
             (unsigned long)old, b.size, size, (void *)p);
    check_at(&b, p, b.size < size ? b.size : size, what);
    w->counts.reallocs++;
    if (route(b.size, b.align) != route(size, malloc_align(size))) w->counts.route_changes++;
    return accept(w, p, size, malloc_align(size), REALLOC);
}

static void sweep(struct worker *w) {
    for (size_t i = 0; i < w->live.n; i++) check(&w->live.items[i], "sweep of live blocks");
    w->counts.sweeps++;
}

static void adopt_inbox(struct worker *w) {
    pthread_mutex_lock(&w->lock);
    while (w->inbox.n) {
        struct block b = list_take(&w->inbox, w->inbox.n - 1);
        check(&b, "adopted from another thread");
        list_push(&w->live, b);
        w->live_bytes += b.size;
        w->counts.adopted++;
    }
    pthread_mutex_unlock(&w->lock);
}

/* A phase: many blocks of one layout, a random 90% of them freed. The next phase's layout is
 * often a size up to a quarter smaller with a larger alignment. */
static void phase(struct worker *w) {
    struct rng *r = &w->rng;
    size_t size, align;
    if (w->phase_size && percent(r, 50)) {
        size = range(r, w->phase_size * 3 / 4, w->phase_size);
        align = (size_t)16 << below(r, 4);
    } else {
        uint64_t roll = below(r, 10);
        size = roll < 6 ? range(r, 1, 256) : roll < 8 ? around_class(r) : range(r, 257, 8 * KIB);
        if (size > 8 * KIB) size = 8 * KIB;
        align = percent(r, 50) ? 0 : pick_align(r);
    }
    w->phase_size = size;
    int how = align == 0 ? (percent(r, 80) ? MALLOC : CALLOC)
                         : (int[]){POSIX_MEMALIGN, ALIGNED_ALLOC, MEMALIGN}[below(r, 3)];
    size_t count = PHASE_BYTES / (size ? size : 1);
    if (count > PHASE_BLOCKS) count = PHASE_BLOCKS;
    if (count < 1) count = 1;
    struct block *bulk = map(count * sizeof(struct block));
    for (size_t i = 0; i < count; i++) bulk[i] = alloc_with(w, how, size, align ? align : 8);
    for (size_t i = count - 1; i > 0; i--) {
        size_t j = below(r, i + 1);
        struct block t = bulk[i];
        bulk[i] = bulk[j];
        bulk[j] = t;
    }
    size_t kept = count / 10;
    for (size_t i = kept; i < count; i++) free_block(w, bulk[i]);
    for (size_t i = 0; i < kept; i++) keep(w, bulk[i]);
    munmap(bulk, count * sizeof(struct block));
    w->counts.phases++;
    w->counts.phase_blocks += count;
}

static void step(struct worker *w, int allow_threads);

struct child_args {
    struct worker *parent;
    struct worker child;
    int steps;
};

static void *child_main(void *arg) {
    struct child_args *a = arg;
    snprintf(context, sizeof context, "%s / short-lived thread", a->parent->name);
    for (size_t i = 0; i < a->child.live.n; i++) check(&a->child.live.items[i], "taken by a short-lived thread");
    for (int i = 0; i < a->steps; i++) step(&a->child, 0);
    return NULL;
}

/* A thread that takes a few blocks, works on them and exits; its blocks come back. */
static void short_lived_thread(struct worker *w) {
    struct child_args *a = map(sizeof *a);
    a->parent = w;
    a->child.index = -1;
    a->child.rng = rng_new(next_u64(&w->rng));
    pthread_mutex_init(&a->child.lock, NULL);
    a->child.live.items = map(LIST_CAP * sizeof(struct block));
    size_t given = w->live.n < 16 ? w->live.n : 16;
    given = range(&w->rng, 0, given);
    for (size_t i = 0; i < given; i++) {
        struct block b = take_random(w);
        list_push(&a->child.live, b);
        a->child.live_bytes += b.size;
    }
    a->steps = (int)range(&w->rng, 0, 64);
    pthread_t t;
    if (pthread_create(&t, NULL, child_main, a)) fail("pthread_create");
    pthread_join(t, NULL);
    counts_add(&w->counts, &a->child.counts);
    for (size_t i = 0; i < a->child.live.n; i++) {
        check(&a->child.live.items[i], "returned by a short-lived thread");
        keep(w, a->child.live.items[i]);
    }
    w->counts.threads++;
    munmap(a->child.live.items, LIST_CAP * sizeof(struct block));
    munmap(a, sizeof *a);
}

static void step(struct worker *w, int allow_threads) {
    struct rng *r = &w->rng;
    while (w->live.n > LIVE_BLOCKS || w->live_bytes > LIVE_BYTES) free_block(w, take_random(w));
    int full = w->live.n >= LIVE_BLOCKS || w->live_bytes >= LIVE_BYTES;
    uint64_t roll = below(r, 1000);
    if (w->live.n == 0 || (roll < 400 && !full)) {
        keep(w, random_alloc(w));
    } else if (roll < 700) {
        free_block(w, take_random(w));
    } else if (roll < 880) {
        keep(w, realloc_block(w, take_random(w)));
    } else if (roll < 960) {
        struct block b = take_random(w);
        check(&b, "before sending");
        if (w->index < 0) {
            keep(w, b); /* a short-lived thread gives its blocks back when it exits */
        } else {
            struct worker *to = &workers[(w->index + 1 + below(r, THREADS - 1)) % THREADS];
            pthread_mutex_lock(&to->lock);
            list_push(&to->inbox, b);
            pthread_mutex_unlock(&to->lock);
            w->counts.sent++;
        }
    } else if (roll < 965) {
        phase(w);
    } else if (roll < 968 && allow_threads) {
        short_lived_thread(w);
    } else if (roll < 975) {
        sweep(w);
    } else {
        free_block(w, take_random(w));
    }
}

static long ops_per_thread = 20000;

static void *worker_main(void *arg) {
    struct worker *w = arg;
    snprintf(context, sizeof context, "%s", w->name);
    for (long op = 0; op < ops_per_thread; op++) {
        if (op % 16 == 0) adopt_inbox(w);
        step(w, 1);
        if (op % 1024 == 1023) check_no_overlap(w);
    }
    while (w->live.n) free_block(w, take(w, w->live.n - 1));
    return NULL;
}

static void run_seed(uint64_t seed, struct counts *total) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        struct worker *w = &workers[i];
        w->index = i;
        w->rng = rng_new(seed * 0x100000001B3ull ^ (uint64_t)i);
        snprintf(w->name, sizeof w->name, "seed %llu, thread %d", (unsigned long long)seed, i);
        w->live.n = w->inbox.n = 0;
        w->live_bytes = 0;
        w->phase_size = 0;
        memset(&w->counts, 0, sizeof w->counts);
    }
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker_main, &workers[i])) fail("pthread_create");
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    /* Blocks sent to threads that had finished: freed here, on yet another thread. */
    snprintf(context, sizeof context, "seed %llu, main", (unsigned long long)seed);
    for (int i = 0; i < THREADS; i++) {
        struct worker *w = &workers[i];
        adopt_inbox(w);
        while (w->live.n) {
            struct block b = list_take(&w->live, w->live.n - 1);
            check(&b, "before free");
            free(b.p);
            w->counts.frees++;
        }
        counts_add(total, &w->counts);
    }
}

int main(int argc, char **argv) {
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
    uint64_t seeds = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    if (argc > 3) ops_per_thread = strtol(argv[3], NULL, 10);
    if (argc > 4) {
        for (char *s = argv[4]; *s && nclasses < 512;) {
            classes[nclasses++] = strtoull(s, &s, 10);
            if (*s == ',') s++;
        }
    } else {
        /* tcalloc's rule: 8-byte steps to 128, then 8 steps per doubling up to 1 MiB. */
        for (size_t s = 8; s <= 128; s += 8) classes[nclasses++] = s;
        for (size_t low = 128; low < MIB; low *= 2)
            for (size_t j = 1; j <= 8; j++) classes[nclasses++] = low + j * (low / 8);
    }
    snprintf(context, sizeof context, "main");
    if (nclasses == 0) fail("no size classes");
    snapshot = map(2 * THREADS * (size_t)LIST_CAP * sizeof(struct block));
    for (int i = 0; i < THREADS; i++) {
        pthread_mutex_init(&workers[i].lock, NULL);
        workers[i].live.items = map(LIST_CAP * sizeof(struct block));
        workers[i].inbox.items = map(LIST_CAP * sizeof(struct block));
    }
    struct counts total;
    memset(&total, 0, sizeof total);
    for (uint64_t s = seed; s < seed + seeds; s++) run_seed(s, &total);
    unsigned long allocs = 0;
    for (int i = 0; i < HOWS; i++) allocs += total.allocs[i];
    printf("model_test ok: seeds %llu..%llu, %ld ops per thread, %zu classes\n",
           (unsigned long long)seed, (unsigned long long)(seed + seeds - 1), ops_per_thread, nclasses);
    printf("%lu allocs:", allocs);
    for (int i = 0; i < HOWS; i++) printf(" %s %lu", how_name[i], total.allocs[i]);
    printf("\nroutes (small/class/page run/large): %lu %lu %lu %lu\n", total.by_route[0],
           total.by_route[1], total.by_route[2], total.by_route[3]);
    printf("%lu calloc checked zero, %lu frees (%lu by realloc(p, 0)), %lu reallocs (%lu across routes)\n",
           total.zeroed, total.frees, total.realloc_frees, total.reallocs, total.route_changes);
    printf("%lu sent, %lu adopted, %lu phases (%lu blocks), %lu short-lived threads, %lu sweeps, "
           "%lu overlap checks\n",
           total.sent, total.adopted, total.phases, total.phase_blocks, total.threads, total.sweeps,
           total.overlap_checks);
    return 0;
}
