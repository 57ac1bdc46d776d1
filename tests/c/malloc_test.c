/*
 * glibc-semantics test of libtcalloc.so's malloc family, run under LD_PRELOAD by
 * tests/c_library.rs. Prints one line per check; exits 0 only if every check passed.
 *
 * Covers: malloc(0), free(NULL), ENOMEM on impossible sizes, calloc/reallocarray overflow,
 * calloc zeroing of reused memory, posix_memalign/aligned_alloc/memalign/valloc/pvalloc with
 * alignments from 8 B to several MiB, malloc_usable_size, realloc(NULL, n), realloc(p, 0),
 * that malloc resolves to libtcalloc, libc functions that allocate internally, threads
 * exchanging blocks, fork while threads allocate, allocation before main, in thread start and
 * exit (TLS destructors), from dlsym/dlerror, and in atexit handlers.
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
    free(a);
    free(b);
    free(NULL);
    CHECK(1, "free(NULL) does nothing");

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
static void *volatile mailbox[SLOTS];
static pthread_key_t key;

static void key_destructor(void *value) {
    /* Runs at thread exit: allocating and freeing here must work. */
    void *p = malloc(777);
    memset(p, 1, 777);
    free(p);
    free(value);
}

static void *producer(void *arg) {
    (void)arg;
    pthread_setspecific(key, malloc(100));
    for (int round = 0; round < 50; round++)
        for (int i = 0; i < SLOTS; i++) {
            char *p = malloc(16 + (i * 37) % 2000);
            p[0] = (char)i;
            void *old = __atomic_exchange_n(&mailbox[i], p, __ATOMIC_ACQ_REL);
            free(old); /* blocks allocated by the other thread, freed here */
        }
    return NULL;
}

static void threads_exchange(void) {
    pthread_key_create(&key, key_destructor);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, producer, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < SLOTS; i++) free(__atomic_exchange_n(&mailbox[i], NULL, __ATOMIC_ACQ_REL));
    CHECK(1, "4 threads exchanging blocks, with thread-exit destructors that allocate");
    /* Many short threads. */
    for (int i = 0; i < 200; i++) {
        pthread_t s;
        pthread_create(&s, NULL, producer, NULL);
        pthread_join(s, NULL);
        if (i % 50 == 0) {
            for (int j = 0; j < SLOTS; j++) free(__atomic_exchange_n(&mailbox[j], NULL, __ATOMIC_ACQ_REL));
        }
    }
    for (int j = 0; j < SLOTS; j++) free(__atomic_exchange_n(&mailbox[j], NULL, __ATOMIC_ACQ_REL));
    CHECK(1, "200 short-lived threads");
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
    atexit(at_exit_handler);
    CHECK(early && strcmp(early, "allocated before main") == 0, "malloc before main");
    free(early);
    basics();
    alignment();
    resolves_to_tcalloc();
    libc_allocates();
    threads_exchange();
    fork_while_allocating();
    printf("%d failure(s)\n", failures);
    return failures == 0 ? 0 : 1;
}
