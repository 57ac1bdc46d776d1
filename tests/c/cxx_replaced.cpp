/*
 * A program that replaces only the plain operator new and operator delete, with a header in
 * front of each block to count its live bytes (run by tests/c_library.rs, with and without
 * LD_PRELOAD=libtcalloc.so). The standard says the forms it leaves out (array, nothrow, sized)
 * call these two, so every block goes through them and the count ends at 0; tcalloc's own
 * forms must step aside for that.
 */
#include <cstdio>
#include <cstdlib>
#include <map>
#include <new>
#include <string>
#include <vector>

static long live, calls;

void *operator new(std::size_t n) {
    char *p = (char *)std::malloc(n + 16);
    if (!p) throw std::bad_alloc();
    *(std::size_t *)p = n;
    live += n;
    calls++;
    return p + 16;
}

void operator delete(void *p) noexcept {
    if (!p) return;
    char *block = (char *)p - 16;
    live -= *(std::size_t *)block;
    std::free(block);
}

struct S {
    long a[8];
};

int main() {
    {
        std::vector<std::string> v; /* sized delete of the vector's buffers */
        for (int i = 0; i < 1000; i++) v.push_back(std::string(100, 'x'));
        std::map<int, std::string> m;
        for (int i = 0; i < 1000; i++) m[i] = std::string(i % 50 + 20, 'y');
    }
    S *s = new (std::nothrow) S; /* the nothrow form calls the program's new */
    delete s;
    char *a = new char[100]; /* new[] and delete[] too */
    delete[] a;
    int *n = new (std::nothrow) int[10];
    delete[] n;
    std::printf("live %ld, %s\n", live, calls > 3000 ? "every block through the program's new" : "blocks missed");
    return live != 0;
}
