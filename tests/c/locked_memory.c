/* Locked memory under LD_PRELOAD: the kernel refuses MADV_DONTNEED on pages locked with
 * mlock (EINVAL). tcalloc used to retry such a span forever, holding its page heap's lock,
 * so this program hung at the free below (run with TCALLOC_FREE_RESERVE_BYTES=0, the free
 * releases what goes back to the page heap at once) or at malloc_trim. It must print
 * "done" and exit 0. mlock of 64 KiB needs no privilege (RLIMIT_MEMLOCK is at least that). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { BYTES = 64 << 10, SMALL = 20000 };

int main(void) {
    static void *small[SMALL];
    char *p = malloc(BYTES);
    if (p == NULL)
        return 2;
    memset(p, 7, BYTES);
    if (mlock(p, BYTES) != 0) {
        perror("mlock");
        return 3;
    }
    free(p);
    /* More frees beyond the reserve, next to the locked pages. */
    for (int i = 0; i < SMALL; i++)
        small[i] = malloc(64 + i % 4000);
    for (int i = 0; i < SMALL; i++)
        free(small[i]);
    malloc_trim(0);
    munlock(p, BYTES);
    puts("done");
    return 0;
}
