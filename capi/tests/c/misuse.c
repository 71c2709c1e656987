/* Program bugs a C program may commit against its allocator, one per run: `misuse CASE SIZE`.
 * The classes are those of mimalloc-bench's security suite (double and invalid frees,
 * overflows and underflows of a block, writes after free, reads of a zero-sized block, ...);
 * the code is this project's own. SIZE is the size of the blocks the case allocates (the
 * tests use 8, 4096 and 256 KiB: a small block, a page-sized one and a large one).
 *
 * What it reports, for tests/preload.rs to check:
 *   - "address 0x..." on stdout, before a free vmarena must refuse (the abort names it);
 *   - "survived" on stdout, if the program got to its end (the bug went unnoticed, which is
 *     allowed for writes vmarena cannot see, and a failure for frees it must refuse);
 *   - "fault in vmarena" / "fault elsewhere" on stderr, from a SIGSEGV/SIGBUS handler that
 *     tells whether the faulting instruction is in the module that provides malloc (a fault
 *     inside the allocator, which must not happen, at least in checked mode) or elsewhere (the
 *     program's own bad access, as with any allocator); it then exits with 77 or 78. (SIGILL
 *     too: jumping into the heap on a machine where the bytes decode to nothing.)
 * Built without optimisation of allocation calls (they go through volatile pointers), so the
 * compiler cannot see through them. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

static void *(*volatile alloc_fn)(size_t) = malloc;
static void (*volatile free_fn)(void *) = free;
static void *(*volatile realloc_fn)(void *, size_t) = realloc;
static void *(*volatile copy_fn)(void *, const void *, size_t) = memcpy;
static void *(*volatile fill_fn)(void *, int, size_t) = memset;

static void *allocator_base; /* where the module that provides malloc is loaded */

static void say(const char *text) { (void)!write(2, text, strlen(text)); }

static void on_fault(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)info;
    ucontext_t *uc = context;
#if defined(__x86_64__)
    void *pc = (void *)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    void *pc = (void *)uc->uc_mcontext.pc;
#else
    void *pc = NULL;
#endif
    Dl_info where;
    int inside = pc && dladdr(pc, &where) && where.dli_fbase == allocator_base;
    say(inside ? "fault in vmarena\n" : "fault elsewhere\n");
    _exit(inside ? 77 : 78);
}

/* Both write with write(2), never stdio: stdio's buffer is a malloc of its own, which would
 * take the very block a case is about to free. */
static void announce(void *p) {
    char line[64];
    int n = snprintf(line, sizeof line, "address %p\n", p);
    (void)!write(1, line, (size_t)n);
}

static void survived(void) { (void)!write(1, "survived\n", 9); }

/* Allocates and frees blocks of `size`, as a program that goes on working does. */
static void keep_working(size_t size, int rounds) {
    for (int i = 0; i < rounds; i++) free_fn(alloc_fn(size));
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: misuse CASE SIZE\n");
        return 2;
    }
    const char *c = argv[1];
    size_t size = strtoull(argv[2], NULL, 0);
    Dl_info me;
    if (dladdr((void *)malloc, &me)) allocator_base = me.dli_fbase;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);

    /* ---- frees the allocator must refuse: each aborts naming the address */
    if (!strcmp(c, "double-free")) {
        char *p = alloc_fn(size);
        free_fn(p);
        announce(p);
        free_fn(p);
    } else if (!strcmp(c, "double-free-after-work")) {
        char *p = alloc_fn(size);
        free_fn(p);
        keep_working(size, 1000);
        announce(p);
        free_fn(p);
    } else if (!strcmp(c, "double-free-between")) {
        char *p = alloc_fn(size), *q = alloc_fn(size);
        free_fn(p);
        free_fn(q);
        announce(p);
        free_fn(p);
    } else if (!strcmp(c, "double-free-then-work")) {
        char *p = alloc_fn(size);
        free_fn(p);
        announce(p);
        free_fn(p);
        keep_working(size, 100000);
    } else if (!strcmp(c, "double-free-reused")) {
        /* The freed block comes back to the next malloc: the stale free frees that one,
         * and freeing it through its new owner is the double free. */
        char *p = alloc_fn(size);
        free_fn(p);
        char *q = alloc_fn(size);
        free_fn(p);
        announce(q);
        free_fn(q);
    } else if (!strcmp(c, "free-constant")) {
        void *p = (void *)(uintptr_t)0x10;
        announce(p);
        free_fn(p);
    } else if (!strcmp(c, "free-stack")) {
        char local[64];
        fill_fn(local, 1, sizeof local);
        announce(local);
        free_fn(local);
    } else if (!strcmp(c, "free-near")) {
        /* 4 KiB past the block: in a page of small blocks, a block carved with it but never
         * handed out; in a large block, a pointer into it. */
        char *p = alloc_fn(size);
        announce(p + 4096);
        free_fn(p + 4096);
    } else if (!strcmp(c, "free-far")) {
        char *p = alloc_fn(size);
        announce(p + (1ul << 30));
        free_fn(p + (1ul << 30));
    } else if (!strcmp(c, "free-plus-1")) {
        char *p = alloc_fn(size);
        announce(p + 1);
        free_fn(p + 1);
    } else if (!strcmp(c, "free-plus-8")) {
        char *p = alloc_fn(size);
        announce(p + 8);
        free_fn(p + 8);
    } else if (!strcmp(c, "free-heap-alloca")) {
        char *p = alloca(size < 65536 ? size : 65536);
        fill_fn(p, 1, 16);
        announce(p);
        free_fn(p);

    /* ---- writes outside a live block, then a free and more work */
    } else if (!strcmp(c, "overflow-1") || !strcmp(c, "overflow-32") ||
               !strcmp(c, "overflow-1m")) {
        size_t by = c[9] == '1' && c[10] == 'm' ? 1u << 20 : c[9] == '3' ? 32 : 1;
        char *p = alloc_fn(size);
        p[size - 1 + by] ^= 0x41;
        free_fn(p);
        keep_working(size, 1000);
    } else if (!strcmp(c, "underflow-1") || !strcmp(c, "underflow-32") ||
               !strcmp(c, "underflow-1m")) {
        size_t by = c[10] == '1' && c[11] == 'm' ? 1u << 20 : c[10] == '3' ? 32 : 1;
        char *p = alloc_fn(size);
        p[-(ptrdiff_t)by] ^= 0x41;
        free_fn(p);
        keep_working(size, 1000);
    } else if (!strcmp(c, "copy-over-end")) {
        char *p = alloc_fn(size), *src = calloc(1, size + 32);
        copy_fn(p, src, size + 32);
        free_fn(p);
        keep_working(size, 1000);
    } else if (!strcmp(c, "copy-before-start")) {
        char *p = alloc_fn(size), *src = calloc(1, size);
        copy_fn(p - 32, src, size);
        free_fn(p);
        keep_working(size, 1000);

    /* ---- writes into freed blocks, then more work */
    } else if (!strcmp(c, "write-after-free")) {
        char *p = alloc_fn(size);
        free_fn(p);
        fill_fn(p, 0x41, size);
        keep_working(size, 1000);
    } else if (!strcmp(c, "write-after-free-link")) {
        /* Only the first word: the free list's link, with a plausible small number. */
        char *p = alloc_fn(size);
        free_fn(p);
        *(uintptr_t *)p = 40;
        keep_working(size, 1000);
    } else if (!strcmp(c, "zero-size-write")) {
        char *p = alloc_fn(0);
        if (!p) return 1;
        p[0] = 0x41;
        free_fn(p);
        keep_working(16, 1000);

    /* ---- what an allocator must do regardless */
    } else if (!strcmp(c, "impossible-size")) {
        void *p = alloc_fn((size_t)-2);
        if (p) {
            fprintf(stderr, "malloc(SIZE_MAX - 1) returned a block\n");
            return 1;
        }
        p = realloc_fn(NULL, (size_t)-2);
        if (p) return 1;
    } else if (!strcmp(c, "heap-not-executable")) {
        unsigned char *p = alloc_fn(size < 64 ? 64 : size);
        p[0] = 0xc3; /* ret (x86-64) */
        ((void (*)(void))p)();
    } else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    survived();
    return 0;
}
