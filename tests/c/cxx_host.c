/* Opens tests/c/cxx_plugin.cpp's library with RTLD_LOCAL and calls it (see there). */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    void *library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        printf("dlopen: %s\n", dlerror());
        return 1;
    }
    int (*nothrow)(void) = (int (*)(void))dlsym(library, "plugin_nothrow");
    int (*throws)(void) = (int (*)(void))dlsym(library, "plugin_throws");
    printf("nothrow new of too much: %s\n", nothrow() ? "not null" : "null");
    fflush(stdout);
    printf("new of too much: %s\n", throws() ? "no bad_alloc" : "bad_alloc caught");
    return 0;
}
