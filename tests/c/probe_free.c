/*
 * Review probes of C free's pointer validation (run under LD_PRELOAD=libtcalloc.so by
 * tests/c_probe.rs). argv[1] names the probe:
 *
 *   sweep        every offset inside and around one object of every class malloc reaches,
 *                and wild values (NULL aside): malloc_usable_size, realloc and free of each
 *                must stop the program unless it is an object start. A SIGABRT handler
 *                jumps back, so one process tries them all; prints "accepted <what>" for each
 *                pointer that was taken, and "stopped <n>" at the end.
 *   uncarved     frees an object slot of a fresh span that malloc never handed out, then
 *                allocates the class until the span is used up: prints "duplicate" when a
 *                block is handed out twice while live. Exits 0 if nothing stopped it.
 *   fresh-thread a thread that never called malloc frees a block twice, back to back.
 *   fresh-thread-span
 *                a block freed and sent back to its span (malloc_trim), then freed again
 *                as the first allocator call of a new thread.
 *   written      a block freed, its first two bytes written (a 16-bit store, as a reference
 *                count's), then freed again.
 *   twice        frees a block of each of a few sizes (and one of every small size) and
 *                frees the first of them again.
 *   stats        mallocs and frees a few blocks, then prints malloc_stats() (on stderr).
 *   below        mallocs one small block and prints what lies right below the mapping that
 *                holds it (/proc/self/maps): "below ---p <KiB>" for an inaccessible mapping
 *                adjacent to it, "below rw-p <KiB>" for another one, "below none" for a gap.
 *   half-page    mallocs and frees the first block of a class that nothing allocated before
 *                (1152-byte objects, seven to a page of 8 KiB), then prints the class, the
 *                block's offset in its page and whether each of the page's two OS pages is
 *                resident (mincore).
 *
 * With PROBE_FILL_MB=n in the environment, n MiB of 64-byte blocks are allocated (and kept)
 * first: enough to use up a small arena, so that the probe's own blocks come from chunks
 * mapped beyond it.
 */
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#include <sys/mman.h>

static void *opaque(void *p) {
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

static sigjmp_buf jump;
static volatile int stops;

static void on_abort(int sig) {
    (void)sig;
    stops++;
    siglongjmp(jump, 1);
}

/* 0 if the call stopped the program (SIGABRT), 1 if it returned. */
enum op { USABLE, REALLOC, FREE };
static int try_op(enum op op, void *p) {
    if (sigsetjmp(jump, 1)) return 0;
    switch (op) {
    case USABLE: opaque((void *)malloc_usable_size(opaque(p))); break;
    case REALLOC: opaque(realloc(opaque(p), 1)); break; /* only called where it must stop */
    case FREE: free(opaque(p)); break;
    }
    return 1;
}

static int sweep(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_abort;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGABRT, &sa, NULL);
    /* Silence the abort messages: thousands of them. */
    int saved = dup(2);
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    int accepted = 0;
    size_t last_class = 0;
    for (size_t size = 16; size <= (1 << 20); size += 16) {
        char *p = malloc(size);
        size_t class = malloc_usable_size(p);
        if (class == last_class) {
            free(p);
            continue;
        }
        last_class = class;
        /* Every offset for small classes; for larger ones the edges of each 4 KiB. */
        for (long d = -64; d < (long)class + 64; d++) {
            if (d == 0 || d % (long)class == 0) continue; /* another object start maybe */
            if (class > 4096 && d > 64 && d < (long)class - 64 && (d % 4096 > 16 && d % 4096 < 4080))
                continue;
            void *q = p + d;
            /* Outside the object, only the pages it shares with p's span. */
            if ((d < 0 || d >= (long)class) &&
                ((uintptr_t)q >> 13 != (uintptr_t)p >> 13 &&
                 (uintptr_t)q >> 13 != ((uintptr_t)p + class - 1) >> 13))
                continue;
            if (try_op(USABLE, q)) {
                dprintf(saved, "accepted malloc_usable_size(p + %ld) of class %zu\n", d, class);
                accepted++;
            }
            if ((d & 7) == 0 || d == 1) {
                if (try_op(REALLOC, q)) {
                    dprintf(saved, "accepted realloc(p + %ld) of class %zu\n", d, class);
                    accepted++;
                    return 1;
                }
                if (try_op(FREE, q)) {
                    dprintf(saved, "accepted free(p + %ld) of class %zu\n", d, class);
                    accepted++;
                    return 1;
                }
            }
        }
        /* The same address with high bits set: non-canonical, kernel half, beyond 2^48. */
        uintptr_t a = (uintptr_t)p;
        uintptr_t wild[] = {a | 1ull << 63, a | 1ull << 48, a + (1ull << 48), a ^ 1ull << 47,
                            a | 0xffff000000000000ull, a + (1ull << 47)};
        for (unsigned i = 0; i < sizeof wild / sizeof wild[0]; i++) {
            if (try_op(USABLE, (void *)wild[i]) || try_op(FREE, (void *)wild[i])) {
                dprintf(saved, "accepted %#lx (from %p, class %zu)\n", (unsigned long)wild[i],
                        (void *)p, class);
                accepted++;
            }
        }
        if (malloc_usable_size(p) != class) {
            dprintf(saved, "usable size of %p changed\n", (void *)p);
            accepted++;
        }
        free(p);
    }
    static __thread char tls_block[64];
    uintptr_t odd[] = {1, 8, 16, 4096, 8192, 0x10000, 1ull << 47, (1ull << 48) - 8192,
                       1ull << 48, 0xffffffffff600000ull, 0xffff800000000000ull,
                       0xfffffffffffff000ull, (uintptr_t)-16, (uintptr_t)tls_block,
                       (uintptr_t)&errno, (uintptr_t)stderr};
    for (unsigned i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        if (try_op(USABLE, (void *)odd[i]) || try_op(FREE, (void *)odd[i])) {
            dprintf(saved, "accepted %#lx\n", (unsigned long)odd[i]);
            accepted++;
        }
    }
    dup2(saved, 2);
    printf("stopped %d accepted %d\n", stops, accepted);
    return accepted != 0;
}

/* A class that nothing allocated before: 20 KiB (3 objects per 7-page span?) or 2 KiB. */
static int uncarved(size_t size, long slot) {
    char *p = opaque(malloc(size));
    size_t class = malloc_usable_size(p);
    char *never = p + slot * (long)class;
    fprintf(stderr, "class %zu: freeing %p, slot %ld after %p\n", class, (void *)never, slot,
            (void *)p);
    free(opaque(never));
    enum { N = 4096 };
    static char *live[N];
    for (int i = 0; i < N; i++) {
        live[i] = malloc(size);
        for (int j = 0; j < i; j++) {
            if (live[j] == live[i] || live[i] == p) {
                printf("duplicate %p (allocation %d)\n", (void *)live[i], i);
                return 1;
            }
        }
    }
    printf("no duplicate\n");
    return 0;
}

/* Frees p twice in a thread whose first call to the allocator this is, then takes one block
 * of the class, which is p (the thread keeps it). */
static void *free_twice_fresh(void *p) {
    free(p);
    free(opaque(p));
    return malloc(64);
}

static int fresh_thread(void) {
    void *keep = opaque(malloc(64));
    void *p = opaque(malloc(64));
    memset(p, 1, 64);
    pthread_t t;
    void *kept;
    pthread_create(&t, NULL, free_twice_fresh, p);
    pthread_join(t, &kept);
    /* The program survived the double free: is the block the thread holds handed out again? */
    for (int i = 0; i < 100000; i++) {
        if (malloc(64) == kept) {
            printf("duplicate %p (allocation %d)\n", kept, i);
            return 1;
        }
    }
    opaque(keep);
    printf("no duplicate\n");
    return 0;
}

static void *free_once(void *p) {
    free(opaque(p));
    return NULL;
}

static int fresh_thread_span(void) {
    void *keep = opaque(malloc(64));
    void *p = opaque(malloc(64));
    free(p);
    /* The thread's cache and the transfer caches go back to the spans: p is on its span's
       own free list, and this thread's cache holds nothing. */
    malloc_trim(0);
    pthread_t t;
    pthread_create(&t, NULL, free_once, p);
    pthread_join(t, NULL);
    opaque(keep);
    printf("survived\n");
    return 0;
}

static int written(void) {
    void *keep = opaque(malloc(64));
    void *p = opaque(malloc(64));
    free(p);
    *(volatile uint16_t *)p = 1;
    free(opaque(p));
    opaque(keep);
    printf("survived\n");
    return 0;
}

static int twice(void) {
    void *blocks[1025];
    for (int i = 0; i <= 1024; i++) blocks[i] = opaque(malloc(i));
    for (int i = 1024; i >= 0; i--) free(blocks[i]);
    void *p = opaque(malloc(64));
    free(p);
    free(opaque(p));
    return 0;
}

static int stats(void) {
    for (int i = 1; i <= 4096; i *= 2) free(opaque(malloc(i)));
    malloc_stats();
    return 0;
}

static int below(void) {
    uintptr_t p = (uintptr_t)opaque(malloc(8));
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return 2;
    char line[512];
    unsigned long start, end, holder = 0, prev_start = 0, prev_end = 0;
    char perms[8], prev_perms[8] = "";
    while (fgets(line, sizeof line, maps)) {
        if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3) continue;
        if (start <= p && p < end) {
            holder = start;
            break;
        }
        prev_start = start;
        prev_end = end;
        strcpy(prev_perms, perms);
    }
    fclose(maps);
    if (!holder) return 2;
    if (prev_end != holder) {
        printf("below none\n");
    } else {
        printf("below %s %lu\n", prev_perms, (prev_end - prev_start) >> 10);
    }
    return 0;
}

static int half_page(void) {
    char *p = opaque(malloc(1100));
    size_t class = malloc_usable_size(p);
    free(opaque(p));
    unsigned char resident[2];
    char *first = (char *)((uintptr_t)p & ~(uintptr_t)8191);
    if (mincore(first, 8192, resident) != 0) {
        perror("mincore");
        return 2;
    }
    printf("class %zu offset %lu resident %d %d\n", class, (unsigned long)(p - first),
           resident[0] & 1, resident[1] & 1);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    const char *fill = getenv("PROBE_FILL_MB");
    if (fill) {
        size_t blocks = (strtoul(fill, NULL, 10) << 20) / 64;
        for (size_t i = 0; i < blocks; i++) opaque(malloc(64));
    }
    if (!strcmp(mode, "sweep")) return sweep();
    if (!strncmp(mode, "uncarved-", 9)) {
        char *end;
        size_t size = strtoul(mode + 9, &end, 10);
        long slot = *end == '-' ? atol(end + 1) : 1;
        return uncarved(size, slot);
    }
    if (!strcmp(mode, "fresh-thread")) return fresh_thread();
    if (!strcmp(mode, "fresh-thread-span")) return fresh_thread_span();
    if (!strcmp(mode, "written")) return written();
    if (!strcmp(mode, "twice")) return twice();
    if (!strcmp(mode, "stats")) return stats();
    if (!strcmp(mode, "half-page")) return half_page();
    if (!strcmp(mode, "below")) return below();
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
