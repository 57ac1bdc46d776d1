/* A C++ library that a C program opens with dlopen(RTLD_LOCAL), as Python opens its
   extensions (run by tests/c_library.rs): the C++ runtime it brings is not in the process's
   global scope, and its operator new must still throw std::bad_alloc when memory runs out. */
#include <cstdint>
#include <new>

static volatile std::size_t too_much = (std::size_t)PTRDIFF_MAX + 1;

extern "C" int plugin_throws(void) {
    try {
        void *p = ::operator new(too_much);
        return p ? 1 : 2;
    } catch (const std::bad_alloc &) {
        return 0;
    }
}

extern "C" int plugin_nothrow(void) {
    return ::operator new(too_much, std::nothrow) ? 1 : 0;
}
