/*
 * The rest of glibc's malloc API (malloc_trim, mallinfo, mallinfo2, malloc_stats, malloc_info,
 * mallopt), C23's free_sized and free_aligned_sized, jemalloc's nallocx and sdallocx, and
 * malloc_good_size, run under LD_PRELOAD=libtcalloc.so by tests/c_library.rs. Prints one line
 * per check; exits 0 only if every check passed.
 *
 * The checks of glibc's functions hold on glibc too (tests/c_library.rs also runs the program
 * without the library), so they test glibc's contract, which tcalloc must keep: mallopt's
 * answers, malloc_info's elements, mallinfo2's figures following allocation, malloc_trim
 * giving memory back. The functions glibc 2.36 lacks are looked up with dlsym and checked
 * only when present (under tcalloc).
 *
 * With an argument, the program instead hands a sized free a size or alignment that does not
 * match the block (tcalloc must abort with "tcalloc: <call>(): size mismatch").
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (cond) {                                                                        \
            printf("ok   ");                                                               \
        } else {                                                                           \
            printf("FAIL ");                                                               \
            failures++;                                                                    \
        }                                                                                  \
        printf(__VA_ARGS__);                                                               \
        printf("\n");                                                                      \
        fflush(stdout);                                                                    \
    } while (0)

#define MIB (1024 * 1024)

/* The functions glibc 2.36 does not have, looked up at run time. */
typedef void (*free_sized_fn)(void *, size_t);
typedef void (*free_aligned_sized_fn)(void *, size_t, size_t);
typedef void (*sdallocx_fn)(void *, size_t, int);
typedef size_t (*nallocx_fn)(size_t, int);
typedef size_t (*good_size_fn)(size_t);

static free_sized_fn free_sized_p;
static free_aligned_sized_fn free_aligned_sized_p;
static sdallocx_fn sdallocx_p;
static nallocx_fn nallocx_p;
static good_size_fn malloc_good_size_p;

static void look_up(void) {
    free_sized_p = (free_sized_fn)dlsym(RTLD_DEFAULT, "free_sized");
    free_aligned_sized_p = (free_aligned_sized_fn)dlsym(RTLD_DEFAULT, "free_aligned_sized");
    sdallocx_p = (sdallocx_fn)dlsym(RTLD_DEFAULT, "sdallocx");
    nallocx_p = (nallocx_fn)dlsym(RTLD_DEFAULT, "nallocx");
    malloc_good_size_p = (good_size_fn)dlsym(RTLD_DEFAULT, "malloc_good_size");
}

static int under_tcalloc(void) { return dlsym(RTLD_DEFAULT, "tcalloc_malloc") != NULL; }

/* Resident memory of this process in bytes. */
static size_t resident(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, pages = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &pages) != 2) pages = 0;
        fclose(f);
    }
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* ---- mallopt: the answers glibc 2.36 gives --------------------------------------------- */

static void mallopt_answers(void) {
    CHECK(mallopt(M_MXFAST, 64) == 1, "mallopt(M_MXFAST, 64) is accepted");
    CHECK(mallopt(M_MXFAST, 161) == 0, "mallopt(M_MXFAST, 161) is refused (above 160)");
    /* glibc 2.36 takes any threshold (earlier versions refused more than 32 MiB). */
    CHECK(mallopt(M_MMAP_THRESHOLD, -1) == 1, "mallopt(M_MMAP_THRESHOLD, -1) is accepted");
    CHECK(mallopt(M_MMAP_THRESHOLD, 64 * MIB) == 1, "mallopt(M_MMAP_THRESHOLD, 64 MiB) is accepted");
    CHECK(mallopt(M_MMAP_THRESHOLD, MIB) == 1, "mallopt(M_MMAP_THRESHOLD, 1 MiB) is accepted");
    CHECK(mallopt(M_ARENA_MAX, 4) == 1, "mallopt(M_ARENA_MAX, 4) succeeds");
    CHECK(mallopt(M_ARENA_TEST, 2) == 1, "mallopt(M_ARENA_TEST, 2) succeeds");
    CHECK(mallopt(M_TOP_PAD, 0) == 1, "mallopt(M_TOP_PAD, 0) succeeds");
    CHECK(mallopt(M_MMAP_MAX, 65536) == 1, "mallopt(M_MMAP_MAX, 65536) succeeds");
    CHECK(mallopt(M_TRIM_THRESHOLD, 16 * MIB) == 1, "mallopt(M_TRIM_THRESHOLD, 16 MiB) succeeds");
    CHECK(mallopt(12345, 1) == 1, "mallopt of an unknown parameter succeeds (as glibc)");
}

/* ---- malloc_info ------------------------------------------------------------------------ */

static void malloc_info_document(void) {
    char *buf = NULL;
    size_t len = 0;
    void *held = malloc(100);
    void *big = malloc(4 * MIB);
    FILE *f = open_memstream(&buf, &len);
    int rc = malloc_info(0, f);
    fclose(f);
    CHECK(rc == 0, "malloc_info(0, fp) returns 0 (%d)", rc);
    CHECK(buf && strncmp(buf, "<malloc version=\"1\">", 20) == 0,
          "malloc_info's document opens with <malloc version=\"1\">");
    CHECK(buf && strstr(buf, "</malloc>") != NULL, "malloc_info's document closes </malloc>");
    const char *elements[] = {"<heap nr=\"0\">", "<sizes>",  "<total type=\"mmap\" count=\"",
                              "<system type=\"current\" size=\"", "<aspace type=\"total\" size=\"",
                              "</heap>"};
    for (size_t i = 0; i < sizeof elements / sizeof *elements; i++)
        CHECK(buf && strstr(buf, elements[i]) != NULL, "malloc_info has %s", elements[i]);
    if (under_tcalloc())
        CHECK(buf && strstr(buf, "<tcalloc allocated=\"") != NULL,
              "malloc_info has tcalloc's figures");
    free(buf);
    f = fopen("/dev/null", "w");
    rc = malloc_info(1, f);
    fclose(f);
    CHECK(rc == EINVAL, "malloc_info(1, fp) answers EINVAL (%d)", rc);
    free(held);
    free(big);
}

/* ---- mallinfo2 / mallinfo follow allocation --------------------------------------------- */

enum { SMALL_BLOCKS = 100000, SMALL_SIZE = 100 };

static void mallinfo_figures(void) {
    struct mallinfo2 before = mallinfo2();
    static void *blocks[SMALL_BLOCKS];
    for (int i = 0; i < SMALL_BLOCKS; i++) {
        blocks[i] = malloc(SMALL_SIZE);
        memset(blocks[i], i, SMALL_SIZE);
    }
    char *large = malloc(8 * MIB);
    memset(large, 1, 8 * MIB);
    struct mallinfo2 during = mallinfo2();
    struct mallinfo old = mallinfo();
    size_t grown = during.uordblks - before.uordblks;
    CHECK(during.uordblks > before.uordblks && grown >= (size_t)SMALL_BLOCKS * SMALL_SIZE,
          "mallinfo2 uordblks grows by the 10 MB allocated (%zu)", grown);
    CHECK(during.arena >= during.uordblks, "mallinfo2 arena (%zu) holds uordblks (%zu)",
          during.arena, during.uordblks);
    CHECK(during.hblks >= before.hblks + 1 && during.hblkhd >= before.hblkhd + 8 * MIB,
          "mallinfo2 counts the 8 MiB block in hblks (%zu) and hblkhd (%zu)", during.hblks,
          during.hblkhd);
    CHECK(old.uordblks > 0 && (size_t)old.uordblks == during.uordblks &&
              (size_t)old.hblkhd == during.hblkhd,
          "mallinfo agrees with mallinfo2 (uordblks %d, hblkhd %d)", old.uordblks, old.hblkhd);
    for (int i = 0; i < SMALL_BLOCKS; i++) free(blocks[i]);
    free(large);
    struct mallinfo2 after = mallinfo2();
    CHECK(after.uordblks + SMALL_BLOCKS * SMALL_SIZE <= during.uordblks,
          "mallinfo2 uordblks falls after free (%zu -> %zu)", during.uordblks, after.uordblks);
    CHECK(after.hblkhd + 8 * MIB <= during.hblkhd, "mallinfo2 hblkhd falls after free");
}

/* ---- malloc_stats ----------------------------------------------------------------------- */

static void malloc_stats_report(void) {
    char path[] = "/tmp/tcalloc-malloc-stats-XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(2);
    fflush(stderr);
    dup2(fd, 2);
    malloc_stats();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[4096] = {0};
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    unlink(path);
    CHECK(n > 0, "malloc_stats prints a report on stderr (%zd bytes)", n);
    if (under_tcalloc())
        CHECK(strstr(text, "in use by the program") != NULL, "malloc_stats prints tcalloc's report");
}

/* ---- malloc_trim gives memory back ---------------------------------------------------- */

enum { TRIM_BLOCKS = 1 << 20, TRIM_SIZE = 64 };

static void malloc_trim_releases(void) {
    /* Keep every free page backed, so that only malloc_trim gives memory back. */
    mallopt(M_TRIM_THRESHOLD, -1);
    void **blocks = malloc(TRIM_BLOCKS * sizeof *blocks);
    for (int i = 0; i < TRIM_BLOCKS; i++) {
        blocks[i] = malloc(TRIM_SIZE);
        memset(blocks[i], 7, TRIM_SIZE);
    }
    size_t peak = resident();
    for (int i = 0; i < TRIM_BLOCKS; i++) free(blocks[i]);
    free(blocks);
    size_t freed = resident();
    struct mallinfo2 kept = mallinfo2();
    int rc = malloc_trim(0);
    /* Nothing was freed since, so there is nothing left to release. */
    int again = malloc_trim(0);
    size_t trimmed = resident();
    struct mallinfo2 after = mallinfo2();
    CHECK(rc == 1, "malloc_trim(0) returns 1 when it released memory (%d)", rc);
    /* With M_TRIM_THRESHOLD -1, the freed pages stay resident until malloc_trim. */
    CHECK(freed > trimmed + 32 * MIB,
          "malloc_trim gives the freed 64 MiB back: resident %zu (peak) -> %zu (freed) -> %zu "
          "(trimmed) MiB",
          peak / MIB, freed / MIB, trimmed / MIB);
    if (under_tcalloc()) {
        CHECK(kept.keepcost >= 32 * MIB && after.keepcost < kept.keepcost / 4,
              "mallinfo2 keepcost falls with malloc_trim (%zu -> %zu KiB)", kept.keepcost / 1024,
              after.keepcost / 1024);
        CHECK(again == 0, "malloc_trim(0) with nothing to release returns 0");
    }
    mallopt(M_TRIM_THRESHOLD, 16 * MIB);
}

/* ---- sized frees and size queries (tcalloc, jemalloc, C23) ------------------------------ */

static void size_queries(void) {
    if (!nallocx_p || !malloc_good_size_p) {
        CHECK(under_tcalloc() == 0, "nallocx and malloc_good_size are exported");
        return;
    }
    int same = 1, bounded = 1, good = 1;
    size_t worst = 0;
    for (size_t n = 0; n <= 4 * MIB; n += (n < 4096 ? 1 : n < MIB ? 4093 : 65521)) {
        void *p = malloc(n);
        size_t usable = malloc_usable_size(p), predicted = nallocx_p(n, 0);
        if (n <= MIB && predicted != usable) same = 0, worst = n;
        if (predicted < n || predicted > usable) bounded = 0, worst = n;
        if (malloc_good_size_p(n) != predicted) good = 0, worst = n;
        free(p);
    }
    CHECK(same, "nallocx(n, 0) == malloc_usable_size(malloc(n)) up to 1 MiB (%zu)", worst);
    CHECK(bounded, "n <= nallocx(n, 0) <= malloc_usable_size(malloc(n)) up to 4 MiB (%zu)", worst);
    CHECK(good, "malloc_good_size(n) == nallocx(n, 0) (%zu)", worst);
    int aligned_ok = 1;
    for (int lg = 4; lg <= 21; lg++) {
        for (size_t n = 1; n <= 2 * MIB; n = n * 3 + 7) {
            void *p = aligned_alloc((size_t)1 << lg, n);
            size_t usable = malloc_usable_size(p), predicted = nallocx_p(n, lg);
            if (predicted < n || predicted > usable || (n <= MIB && lg <= 20 && predicted != usable))
                aligned_ok = 0, worst = n;
            free(p);
        }
    }
    CHECK(aligned_ok, "nallocx(n, MALLOCX_LG_ALIGN(lg)) is the usable size of aligned_alloc");
    CHECK(nallocx_p(SIZE_MAX, 0) == 0, "nallocx of an impossible size is 0");
    CHECK(malloc_good_size_p(0) >= 1, "malloc_good_size(0) is the smallest block");
}

static void sized_frees(void) {
    if (!free_sized_p || !free_aligned_sized_p || !sdallocx_p) {
        CHECK(under_tcalloc() == 0, "free_sized, free_aligned_sized and sdallocx are exported");
        return;
    }
    size_t sizes[] = {0, 1, 8, 24, 100, 1000, 1024, 5000, 70000, MIB, 3 * MIB};
    int reused = 1;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        void *p = malloc(n);
        free_sized_p(p, n);
        void *q = malloc(n);
        /* A small block freed goes to the top of the thread's list and comes straight back. */
        if (n <= 1024 && q != p) reused = 0;
        sdallocx_p(q, n, 0);
        void *a = aligned_alloc(4096, n);
        free_aligned_sized_p(a, 4096, n);
        void *b = aligned_alloc(64, n + 1);
        sdallocx_p(b, n + 1, 6 /* MALLOCX_LG_ALIGN(6) */);
    }
    CHECK(reused, "free_sized frees: the next malloc of the size gets the block back");
    free_sized_p(NULL, 10);
    free_aligned_sized_p(NULL, 64, 10);
    /* A block that realloc shrank in place is larger than its owner's size: accepted. */
    char *r = malloc(1000);
    r = realloc(r, 600);
    free_sized_p(r, 600);
    CHECK(1, "free_sized, free_aligned_sized and sdallocx of every kind of block");
}

/* ---- mismatches, in a child run: argv[1] names one ------------------------------------- */

static int mismatch(const char *mode) {
    look_up();
    char *blocks[64];
    for (int i = 0; i < 64; i++) blocks[i] = malloc(100);
    char *unaligned = NULL;
    for (int i = 0; i < 64 && !unaligned; i++)
        if ((uintptr_t)blocks[i] % 4096 != 0) unaligned = blocks[i];
    if (!free_sized_p || !free_aligned_sized_p || !sdallocx_p) return 2;
    if (!strcmp(mode, "free-sized-too-big")) free_sized_p(blocks[0], 4096);
    else if (!strcmp(mode, "free-aligned-sized-misaligned")) free_aligned_sized_p(unaligned, 4096, 100);
    else if (!strcmp(mode, "free-aligned-sized-bad-alignment")) free_aligned_sized_p(blocks[1], 24, 100);
    else if (!strcmp(mode, "sdallocx-too-big")) sdallocx_p(blocks[2], 1 << 20, 0);
    else return 2;
    return 0; /* the allocator accepted it */
}

int main(int argc, char **argv) {
    if (argc > 1) return mismatch(argv[1]);
    look_up();
    printf("running under %s\n", under_tcalloc() ? "tcalloc" : "glibc");
    mallopt_answers();
    malloc_info_document();
    mallinfo_figures();
    malloc_stats_report();
    malloc_trim_releases();
    size_queries();
    sized_frees();
    printf("%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
