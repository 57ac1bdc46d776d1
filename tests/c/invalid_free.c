/*
 * Hands libtcalloc.so a pointer it never gave out, in the way named by argv[1]. Under
 * LD_PRELOAD the program must stop with "tcalloc: <call>(): invalid pointer 0x..." on stderr
 * and SIGABRT; tests/c_library.rs checks that. Exits 0 if the allocator accepted the pointer.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    }
    fprintf(stderr, "the allocator accepted %p (%s)\n", bad, mode);
    return 0;
}
