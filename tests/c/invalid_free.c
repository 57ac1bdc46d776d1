/*
 * Misuses libtcalloc.so in the way named by argv[1]: a pointer it never gave out, a double
 * free, a write into a freed block. Under LD_PRELOAD the program must stop with SIGABRT and
 * "tcalloc: <call>(): invalid pointer 0x...", "tcalloc: <call>(): double free 0x..." or
 * "tcalloc: heap corruption ..." on stderr; tests/c_library.rs checks which. Exits 0 if the
 * allocator let the misuse pass.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Hides a pointer from the optimiser, which may otherwise pair and drop a malloc and a free, or
 * drop a store into freed memory. */
static void *opaque(void *p) {
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

/* Frees a fresh block of `size` bytes twice, with `others` frees of other blocks between. */
static void *double_free(size_t size, int others) {
    char *p = opaque(malloc(size));
    char *q[4];
    memset(p, 1, size);
    for (int i = 0; i < others; i++) q[i] = opaque(malloc(size));
    free(p);
    for (int i = 0; i < others; i++) free(q[i]);
    void *volatile again = p;
    free(again);
    return again;
}

static char static_buffer[256];

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    char stack_buffer[64];
    char *block = malloc(100);
    char *big = malloc(8 << 20);
    void *volatile bad = NULL;
    if (!strcmp(mode, "free-stack")) {
        bad = stack_buffer;
        free(bad);
    } else if (!strcmp(mode, "free-static")) {
        bad = static_buffer;
        free(bad);
    } else if (!strcmp(mode, "free-interior")) {
        bad = block + 8;
        free(bad);
    } else if (!strcmp(mode, "free-large-interior")) {
        bad = big + 4096;
        free(bad);
    } else if (!strcmp(mode, "free-wild")) {
        bad = (void *)0x123456789000;
        free(bad);
    } else if (!strcmp(mode, "realloc-interior")) {
        bad = block + 16;
        bad = realloc(bad, 200);
    } else if (!strcmp(mode, "usable-stack")) {
        bad = stack_buffer;
        printf("%zu\n", malloc_usable_size(bad));
    } else if (!strcmp(mode, "free-large-twice")) {
        free(big);
        bad = big;
        free(bad);
    } else if (!strncmp(mode, "double-free-", 12)) {
        /* double-free-<size>[-<others>] */
        char *end;
        size_t size = strtoul(mode + 12, &end, 10);
        int others = *end == '-' ? atoi(end + 1) : 0;
        bad = double_free(size, others);
    } else if (!strcmp(mode, "double-free-page-run")) {
        void *p = aligned_alloc(65536, 100000);
        free(p);
        bad = p;
        free(bad);
    } else if (!strcmp(mode, "realloc-after-free")) {
        void *p = malloc(64);
        free(p);
        bad = p;
        bad = realloc(bad, 100);
    } else if (!strcmp(mode, "write-after-free") || !strcmp(mode, "zero-after-free")) {
        /* Overwrites the link of a freed block; the next malloc of its class pops it (after a
         * few rounds, the thread's list of the class keeps what is freed). */
        for (int round = 0; round < 4; round++) {
            void *warm[16];
            for (int i = 0; i < 16; i++) warm[i] = opaque(malloc(48));
            for (int i = 0; i < 16; i++) free(warm[i]);
        }
        char *p = opaque(malloc(48));
        free(p);
        char *freed = opaque(p);
        if (mode[0] == 'w') memcpy(freed, "AAAAAAAA", 8);
        else memset(freed, 0, 8);
        opaque(freed);
        bad = malloc(48);
    }
    fprintf(stderr, "the allocator accepted %p (%s)\n", bad, mode);
    return 0;
}
