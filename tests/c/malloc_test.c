/*
 * glibc-semantics test of libtcalloc.so's malloc family, run under LD_PRELOAD by
 * tests/c_library.rs. Prints one line per check; exits 0 only if every check passed.
 *
 * Covers: malloc(0), free(NULL), ENOMEM on impossible sizes, calloc/reallocarray overflow,
 * calloc zeroing of reused memory, posix_memalign/aligned_alloc/memalign/valloc/pvalloc with
 * alignments from 8 B to several MiB, malloc_usable_size, realloc(NULL, n), realloc(p, 0),
 * that malloc resolves to libtcalloc, libc functions that allocate internally, threads
 * exchanging blocks, fork while threads allocate, allocation before main, in thread start and
 * exit (TLS destructors), a thread's first allocation in a pthread key destructor, from
 * dlsym/dlerror, and in atexit handlers.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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
    } while (0)

static int aligned(void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* ---- allocation before main and at exit ---------------------------------------------- */

static char *early;

__attribute__((constructor)) static void before_main(void) {
    early = malloc(123);
    if (early) strcpy(early, "allocated before main");
}

static void at_exit_handler(void) {
    char *p = malloc(4096);
    char *q = strdup("atexit");
    if (!p || !q || strcmp(q, "atexit") != 0) _exit(3);
    free(p);
    free(q);
}

/* ---- basic glibc semantics ------------------------------------------------------------ */

static void basics(void) {
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b, "malloc(0) returns unique pointers");
    errno = 1234;
    free(a);
    CHECK(errno == 1234, "free keeps errno");
    free(b);
    free(NULL);
    CHECK(errno == 1234, "free(NULL) does nothing, errno kept");

    errno = 0;
    void *huge = malloc(SIZE_MAX);
    CHECK(huge == NULL && errno == ENOMEM, "malloc(SIZE_MAX) is NULL with ENOMEM");
    errno = 0;
    huge = malloc((size_t)PTRDIFF_MAX + 1);
    CHECK(huge == NULL && errno == ENOMEM, "malloc(PTRDIFF_MAX + 1) is NULL with ENOMEM");
    errno = 0;
    huge = malloc((size_t)1 << 62);
    CHECK(huge == NULL && errno == ENOMEM, "malloc(4 EiB) is NULL with ENOMEM");

    errno = 0;
    void *c = calloc(SIZE_MAX / 2, 3);
    CHECK(c == NULL && errno == ENOMEM, "calloc overflow is NULL with ENOMEM");
    errno = 0;
    void *r = reallocarray(NULL, SIZE_MAX / 4, 8);
    CHECK(r == NULL && errno == ENOMEM, "reallocarray overflow is NULL with ENOMEM");
    int *arr = reallocarray(NULL, 100, sizeof(int));
    CHECK(arr != NULL, "reallocarray(NULL, 100, 4) allocates");
    for (int i = 0; i < 100; i++) arr[i] = i;
    errno = 0;
    int *volatile keep_arr = arr;
    int *same = reallocarray(keep_arr, SIZE_MAX / 2, 4);
    CHECK(same == NULL && errno == ENOMEM && keep_arr[99] == 99, "failed reallocarray keeps the block");
    free(keep_arr);

    /* calloc memory is zero even when reused */
    int dirty_ok = 1;
    for (size_t size = 8; size <= (8u << 20); size *= 3) {
        unsigned char *d = malloc(size);
        memset(d, 0xAB, size);
        free(d);
        unsigned char *z = calloc(1, size);
        for (size_t i = 0; i < size; i += 61) dirty_ok &= z[i] == 0;
        dirty_ok &= z[size - 1] == 0;
        free(z);
    }
    CHECK(dirty_ok, "calloc memory is zero after reuse, 8 B to 8 MiB");
    void *cz = calloc(0, 16);
    CHECK(cz != NULL, "calloc(0, 16) returns a unique pointer");
    free(cz);

    char *n = realloc(NULL, 40);
    CHECK(n != NULL, "realloc(NULL, n) is malloc(n)");
    strcpy(n, "hello");
    n = realloc(n, 100000);
    CHECK(n && strcmp(n, "hello") == 0, "realloc grows and keeps the contents");
    n = realloc(n, 3 << 20);
    CHECK(n && strcmp(n, "hello") == 0, "realloc into a large block keeps the contents");
    n = realloc(n, 10);
    CHECK(n && strcmp(n, "hello") == 0, "realloc shrinks and keeps the contents");
    errno = 0;
    void *z0 = realloc(n, 0);
    CHECK(z0 == NULL, "realloc(p, 0) frees and returns NULL, as glibc");
    errno = 0;
    char *volatile keep = malloc(32);
    strcpy(keep, "kept");
    void *fail = realloc(keep, SIZE_MAX - 4096);
    CHECK(fail == NULL && errno == ENOMEM && strcmp(keep, "kept") == 0,
          "failed realloc is NULL with ENOMEM and keeps the block");
    free(keep);

    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) is 0");
    int usable_ok = 1;
    for (size_t size = 1; size < (4u << 20); size = size * 2 + 3) {
        unsigned char *u = malloc(size);
        size_t us = malloc_usable_size(u);
        usable_ok &= us >= size;
        memset(u, 0x5A, us); /* all of it writable */
        usable_ok &= aligned(u, size > 8 ? 16 : 8);
        free(u);
    }
    CHECK(usable_ok, "malloc_usable_size >= request, all writable; malloc 16-aligned above 8 B");
}

/* ---- alignment ------------------------------------------------------------------------ */

static void alignment(void) {
    void *p = (void *)1;
    CHECK(posix_memalign(&p, 3, 64) == EINVAL && p == (void *)1,
          "posix_memalign: alignment 3 is EINVAL, *out untouched");
    CHECK(posix_memalign(&p, 4, 64) == EINVAL, "posix_memalign: alignment below sizeof(void*) is EINVAL");
    CHECK(posix_memalign(&p, 0, 64) == EINVAL, "posix_memalign: alignment 0 is EINVAL");
    CHECK(posix_memalign(&p, 64, SIZE_MAX - 100) == ENOMEM, "posix_memalign: huge size is ENOMEM");
    int ok = 1;
    for (size_t a = 8; a <= (8u << 20); a *= 2) {
        for (size_t size = 1; size <= (2u << 20); size = size * 5 + 7) {
            void *q = NULL;
            ok &= posix_memalign(&q, a, size) == 0 && q && aligned(q, a);
            memset(q, 1, size);
            free(q);
            void *r = aligned_alloc(a, size);
            ok &= r && aligned(r, a);
            memset(r, 2, size);
            free(r);
            void *m = memalign(a, size);
            ok &= m && aligned(m, a);
            memset(m, 3, size);
            free(m);
        }
    }
    CHECK(ok, "posix_memalign, aligned_alloc, memalign: alignments 8 B to 8 MiB");
    int zero_ok = 1;
    for (size_t a = 8; a <= (64u << 10); a *= 2) {
        void *q = NULL;
        zero_ok &= posix_memalign(&q, a, 0) == 0 && q && aligned(q, a);
        free(q);
        void *r = aligned_alloc(a, 0);
        zero_ok &= r && aligned(r, a);
        free(r);
        void *m = memalign(a, 0);
        zero_ok &= m && aligned(m, a);
        free(m);
    }
    CHECK(zero_ok, "posix_memalign, aligned_alloc, memalign of 0 bytes: aligned, 8 B to 64 KiB");
    errno = 0;
    void *bad = aligned_alloc(48, 100);
    CHECK(bad == NULL && errno == EINVAL, "aligned_alloc with a non-power-of-two is NULL with EINVAL");
    void *m48 = memalign(48, 100);
    CHECK(m48 && aligned(m48, 64), "memalign rounds a non-power-of-two alignment up");
    free(m48);
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(100);
    CHECK(v && aligned(v, page), "valloc is page-aligned");
    free(v);
    void *pv = pvalloc(100);
    CHECK(pv && aligned(pv, page) && malloc_usable_size(pv) >= (size_t)page,
          "pvalloc is page-aligned and rounds up to a page");
    memset(pv, 9, page);
    free(pv);
    void *pv0 = pvalloc(0);
    CHECK(pv0 && malloc_usable_size(pv0) >= (size_t)page, "pvalloc(0) gives one page");
    free(pv0);
}

/* ---- which malloc ----------------------------------------------------------------------- */

static void resolves_to_tcalloc(void) {
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    int found = sym && dladdr(sym, &info) && info.dli_fname && strstr(info.dli_fname, "libtcalloc");
    CHECK(found, "malloc resolves to libtcalloc (%s)", found ? info.dli_fname : "?");
    CHECK(dlsym(RTLD_DEFAULT, "tcalloc_malloc") != NULL, "tcalloc_malloc is exported too");
    void *m = dlopen("libm.so.6", RTLD_NOW);
    CHECK(m != NULL && dlsym(m, "cos") != NULL, "dlopen/dlsym work");
    CHECK(dlsym(m, "no_such_symbol") == NULL && dlerror() != NULL, "dlerror works (it allocates)");
    if (m) dlclose(m);
}

/* ---- libc functions that allocate ------------------------------------------------------- */

static void libc_allocates(void) {
    char *s = strdup("duplicate me");
    CHECK(s && strcmp(s, "duplicate me") == 0, "strdup");
    free(s);
    char *a = NULL;
    int n = asprintf(&a, "%d-%s-%f", 42, "x", 1.5);
    CHECK(n > 0 && a && strcmp(a, "42-x-1.500000") == 0, "asprintf");
    free(a);
    FILE *f = tmpfile();
    for (int i = 0; i < 1000; i++) fprintf(f, "line %d with some text to make it longer\n", i);
    rewind(f);
    char *line = NULL;
    size_t cap = 0;
    int lines = 0;
    while (getline(&line, &cap, f) > 0) lines++;
    CHECK(lines == 1000, "getline read %d lines", lines);
    free(line);
    fclose(f);
    char *buf = NULL;
    size_t len = 0;
    FILE *ms = open_memstream(&buf, &len);
    for (int i = 0; i < 10000; i++) fprintf(ms, "%d,", i);
    fclose(ms);
    CHECK(buf && len > 40000, "open_memstream grew to %zu bytes", len);
    free(buf);
}

/* ---- threads -------------------------------------------------------------------------- */

#define SLOTS 4096
#define ROUNDS 50
static void *volatile mailbox[SLOTS];
static pthread_key_t key;
/* Blocks put into the mailbox, blocks taken out and verified, and those that were wrong. */
static unsigned long produced, verified, corrupted;
static unsigned long destructor_runs, destructor_failures;
static unsigned long next_stamp;

static size_t slot_size(int i) { return 16 + (size_t)(i * 37) % 2000; }

/* A mailbox block carries its slot and a stamp unique to the thread and round that wrote it in
 * its first 8 bytes, and the complement in its last 8: a block handed out twice, or a stray
 * write by the allocator, breaks the pair. */
static void stamp_block(unsigned char *p, int slot, unsigned long stamp) {
    uint64_t head = (uint64_t)slot << 40 | stamp, tail = ~head;
    memcpy(p, &head, 8);
    memcpy(p + slot_size(slot) - 8, &tail, 8);
}

/* Verifies a block taken out of slot `slot` (NULL: the slot was empty) and frees it. */
static void verify_and_free(unsigned char *p, int slot) {
    if (!p) return;
    uint64_t head, tail;
    memcpy(&head, p, 8);
    memcpy(&tail, p + slot_size(slot) - 8, 8);
    int ok = head >> 40 == (uint64_t)slot && tail == ~head;
    __atomic_add_fetch(ok ? &verified : &corrupted, 1, __ATOMIC_RELAXED);
    free(p);
}

static void key_destructor(void *value) {
    /* Runs at thread exit: allocating and freeing here must work, and the thread's value is
     * intact. */
    unsigned char *v = value, *p = malloc(777);
    int ok = v && p;
    for (int i = 0; ok && i < 100; i++) ok &= v[i] == (unsigned char)(i * 3);
    if (p) {
        memset(p, 1, 777);
        ok &= p[0] == 1 && p[776] == 1;
    }
    free(p);
    free(value);
    __atomic_add_fetch(&destructor_runs, 1, __ATOMIC_RELAXED);
    if (!ok) __atomic_add_fetch(&destructor_failures, 1, __ATOMIC_RELAXED);
}

static void *producer(void *arg) {
    (void)arg;
    unsigned char *value = malloc(100);
    for (int i = 0; value && i < 100; i++) value[i] = (unsigned char)(i * 3);
    pthread_setspecific(key, value);
    for (int round = 0; round < ROUNDS; round++) {
        unsigned long stamp = __atomic_add_fetch(&next_stamp, 1, __ATOMIC_RELAXED);
        for (int i = 0; i < SLOTS; i++) {
            unsigned char *p = malloc(slot_size(i));
            stamp_block(p, i, stamp);
            __atomic_add_fetch(&produced, 1, __ATOMIC_RELAXED);
            void *old = __atomic_exchange_n(&mailbox[i], p, __ATOMIC_ACQ_REL);
            verify_and_free(old, i); /* often allocated by another thread, freed here */
        }
    }
    return NULL;
}

static void empty_mailbox(void) {
    for (int i = 0; i < SLOTS; i++) verify_and_free(__atomic_exchange_n(&mailbox[i], NULL, __ATOMIC_ACQ_REL), i);
}

static void threads_exchange(void) {
    pthread_key_create(&key, key_destructor);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, producer, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    empty_mailbox();
    CHECK(verified == produced && produced == 4ul * ROUNDS * SLOTS && corrupted == 0 &&
              destructor_runs == 4 && destructor_failures == 0,
          "4 threads exchanging blocks: %lu of %lu verified, %lu corrupted; %lu thread-exit "
          "destructors that allocate, %lu failed",
          verified, produced, corrupted, destructor_runs, destructor_failures);
    /* Many short threads. */
    for (int i = 0; i < 200; i++) {
        pthread_t s;
        pthread_create(&s, NULL, producer, NULL);
        pthread_join(s, NULL);
        if (i % 50 == 0) empty_mailbox();
    }
    empty_mailbox();
    CHECK(verified == produced && produced == 204ul * ROUNDS * SLOTS && corrupted == 0 &&
              destructor_runs == 204 && destructor_failures == 0,
          "200 short-lived threads: %lu of %lu blocks verified, %lu corrupted; %lu destructors, "
          "%lu failed",
          verified, produced, corrupted, destructor_runs, destructor_failures);
}

/* ---- a thread whose first allocation is in a pthread key destructor ------------------- */

/* Such a thread's thread-local destructors have run before its first malloc, so a destructor
 * registered then for its cache never runs: without another way to retire it, the cache stays
 * counted (and linked in tcalloc's registry) after the thread is gone, and the next thread,
 * given the same stack and TLS by glibc, links a cache at the same address again. */
static pthread_key_t late_key;
static unsigned long late_failures;

static void late_destructor(void *value) {
    (void)value;
    void *p = malloc(48);
    if (!p) __atomic_add_fetch(&late_failures, 1, __ATOMIC_RELAXED);
    else memset(p, 7, 48);
    free(p);
}

static void *allocates_only_at_exit(void *arg) {
    pthread_setspecific(late_key, arg); /* one of the first 32 keys: no allocation */
    return NULL;
}

/* tcalloc's count of threads with a cache, from malloc_info's threads="N" (-1: not found). */
static long threads_with_a_cache(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return -1;
    malloc_info(0, f);
    fclose(f);
    char *at = text ? strstr(text, "threads=\"") : NULL;
    long n = at ? strtol(at + strlen("threads=\""), NULL, 10) : -1;
    free(text);
    return n;
}

static void first_allocation_in_a_key_destructor(void) {
    pthread_key_create(&late_key, late_destructor);
    long before = threads_with_a_cache();
    for (int i = 0; i < 50; i++) {
        pthread_t t;
        pthread_create(&t, NULL, allocates_only_at_exit, (void *)1);
        pthread_join(t, NULL);
    }
    long after = threads_with_a_cache();
    CHECK(before >= 1 && after == before && late_failures == 0,
          "50 threads whose first allocation is in a pthread key destructor: %ld threads with "
          "a cache before, %ld after, %lu allocations failed",
          before, after, late_failures);
}

/* ---- fork while threads allocate ------------------------------------------------------ */

static volatile int stop;

static void *busy(void *arg) {
    (void)arg;
    while (!stop) {
        void *b[64];
        for (int i = 0; i < 64; i++) b[i] = malloc(8 + i * 40);
        for (int i = 0; i < 64; i++) free(b[i]);
    }
    return NULL;
}

static void fork_while_allocating(void) {
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, busy, NULL);
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            void *p = malloc(1000);
            char *s = strdup("child");
            void *big = malloc(5 << 20);
            memset(big, 1, 5 << 20);
            free(big);
            free(s);
            free(p);
            _exit(0);
        }
        int status = 0;
        ok &= waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    stop = 1;
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    CHECK(ok, "100 forks while 3 threads allocate: every child allocates and exits 0");
}

int main(void) {
    /* A corrupted heap may hang instead of crashing (a cycle in a list): fail then too. */
    alarm(120);
    atexit(at_exit_handler);
    CHECK(early && strcmp(early, "allocated before main") == 0, "malloc before main");
    free(early);
    basics();
    alignment();
    resolves_to_tcalloc();
    libc_allocates();
    threads_exchange();
    first_allocation_in_a_key_destructor();
    fork_while_allocating();
    printf("%d failure(s)\n", failures);
    return failures == 0 ? 0 : 1;
}
