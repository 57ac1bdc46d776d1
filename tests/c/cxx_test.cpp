/*
 * C++'s operator new and operator delete under LD_PRELOAD=libtcalloc.so (run by
 * tests/c_library.rs). Without an argument it runs every check and prints "ok ..." or
 * "FAIL ..." lines and a failure count; "bad-delete" and "double-delete" misuse the operators
 * and must be stopped by tcalloc.
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <new>
#include <string>
#include <vector>

static int failures;

static void check(bool ok, const char *what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) failures++;
}

/* tcalloc's malloc_usable_size, which aborts on a pointer tcalloc did not hand out. */
static size_t usable(void *p) {
    static auto f = (size_t (*)(void *))dlsym(RTLD_DEFAULT, "tcalloc_malloc_usable_size");
    return f ? f(p) : 0;
}

static bool from_libtcalloc(const char *symbol) {
    Dl_info info;
    void *address = dlsym(RTLD_DEFAULT, symbol);
    return address && dladdr(address, &info) && info.dli_fname &&
           std::strstr(info.dli_fname, "libtcalloc");
}

/* Keeps the compiler from pairing and removing a new with its delete. */
static void *volatile sink;

struct Counted {
    static int live;
    char bytes[40];
    Counted() { live++; }
    ~Counted() { live--; }
};
int Counted::live;

struct alignas(256) Wide {
    char bytes[300];
};

static int handler_calls;
static void handler() {
    if (++handler_calls == 2) std::set_new_handler(nullptr);
}

/* Beyond PTRDIFF_MAX: never served, on any allocator. */
static size_t huge() {
    return (size_t)PTRDIFF_MAX + (size_t)(sink != &sink);
}

static int all() {
    const char *symbols[] = {
        "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
        "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
        "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
        "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t",
        "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t",
        "_ZdaPvmSt11align_val_t", "_ZdlPvSt11align_val_tRKSt9nothrow_t",
        "_ZdaPvSt11align_val_tRKSt9nothrow_t",
    };
    int resolved = 0;
    for (const char *s : symbols) {
        if (from_libtcalloc(s)) resolved++;
        else std::printf("     %s does not resolve to libtcalloc\n", s);
    }
    check(resolved == 20, "all 20 operators resolve to libtcalloc");

    /* Every size up to 4 KiB and a few larger: tcalloc's blocks, writable, freed by sized and
       unsized delete. */
    bool fits = true;
    for (size_t n = 0; n <= 4096 || n < (size_t)3 << 20; n = n < 4096 ? n + 1 : n * 3) {
        char *p = (char *)::operator new(n);
        sink = p;
        if (usable(p) < n) fits = false;
        std::memset(p, 0xa5, n);
        if (n % 2) ::operator delete(p, n);
        else ::operator delete(p);
        char *q = (char *)::operator new[](n);
        if (usable(q) < n) fits = false;
        std::memset(q, 0x5a, n);
        if (n % 2) ::operator delete[](q, n);
        else ::operator delete[](q);
    }
    check(fits, "new and new[] give tcalloc blocks of at least the size, every size to 4 KiB and up to 3 MiB");

    void *zero1 = ::operator new(0), *zero2 = ::operator new(0);
    check(zero1 && zero2 && zero1 != zero2, "new(0) gives distinct pointers");
    ::operator delete(zero1);
    ::operator delete(zero2);

    /* Arrays of objects with destructors carry a cookie: new[] and delete[] must agree. */
    Counted *many = new Counted[1000];
    sink = many;
    check(Counted::live == 1000, "new Counted[1000] constructs");
    delete[] many;
    check(Counted::live == 0, "delete[] destroys");

    /* Aligned forms, from 16 bytes to 2 MiB of alignment. */
    bool aligned = true;
    for (size_t a = 16; a <= (size_t)2 << 20; a *= 2) {
        for (size_t n : {(size_t)1, a / 2, a, 3 * a + 1}) {
            void *p = ::operator new(n, std::align_val_t(a));
            void *q = ::operator new[](n, std::align_val_t(a), std::nothrow);
            if ((uintptr_t)p % a || (uintptr_t)q % a || usable(p) < n || usable(q) < n)
                aligned = false;
            std::memset(p, 1, n);
            std::memset(q, 2, n);
            if (n % 2) ::operator delete(p, n, std::align_val_t(a));
            else ::operator delete(p, std::align_val_t(a));
            ::operator delete[](q, std::align_val_t(a), std::nothrow);
        }
    }
    check(aligned, "aligned new gives aligned tcalloc blocks, 16 B to 2 MiB of alignment");
    std::vector<Wide> wide(100);
    check((uintptr_t)wide.data() % 256 == 0, "a vector of alignas(256) elements is aligned");

    /* The standard library's containers, through the operators. */
    std::vector<std::string> strings;
    for (int i = 0; i < 10000; i++) strings.push_back(std::string(i % 300, 'a' + i % 26));
    size_t total = 0;
    for (auto &s : strings) total += s.size();
    check(total == 1485000 && usable(&strings[0]) > 0, "strings in a vector");

    /* Out of memory: the throwing form throws std::bad_alloc through tcalloc's operator to the
       handler here, the nothrow form returns null, and new_handler runs as the standard says. */
    bool threw = false;
    try {
        sink = ::operator new(huge());
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw, "new of more than PTRDIFF_MAX throws std::bad_alloc");
    threw = false;
    try {
        sink = ::operator new[](huge(), std::align_val_t(64));
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw, "aligned new[] of more than PTRDIFF_MAX throws std::bad_alloc");
    threw = false;
    try {
        /* The C++ runtime's aligned new rounds the size up to the alignment, which wraps to 0
           past SIZE_MAX (libstdc++ 12): tcalloc must not hand it a size it can wrap. */
        sink = ::operator new(SIZE_MAX, std::align_val_t(64));
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw, "aligned new of SIZE_MAX throws std::bad_alloc");
    check(::operator new[](SIZE_MAX - 8, std::align_val_t(64), std::nothrow) == nullptr,
          "aligned nothrow new[] of SIZE_MAX - 8 is null");
    check(::operator new(huge(), std::nothrow) == nullptr, "nothrow new of too much is null");
    check(::operator new[](huge(), std::align_val_t(64), std::nothrow) == nullptr,
          "aligned nothrow new[] of too much is null");
    std::set_new_handler(handler);
    threw = false;
    try {
        sink = ::operator new(huge());
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw && handler_calls == 2, "new_handler runs until it removes itself, then bad_alloc");

    std::printf("%d failure(s)\n", failures);
    return failures != 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!std::strcmp(mode, "bad-delete")) {
        static long not_from_new[8];
        ::operator delete(&not_from_new[2]);
        return 0;
    }
    if (!std::strcmp(mode, "double-delete")) {
        char *p = new char[48];
        sink = p;
        delete[] p;
        delete[] p;
        return 0;
    }
    if (!std::strcmp(mode, "interior-delete")) {
        char *p = new char[100];
        sink = p;
        ::operator delete(p + 16, 84);
        return 0;
    }
    return all();
}
