/* Edge cases of every function libvmarena.so exports, threads that share blocks, and fork()
 * while other threads allocate. Built and run (with LD_PRELOAD) by tests/preload.rs; prints
 * "ok" and exits 0, or names the failed check and exits 1. */
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

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);           \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

static int aligned(void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 31);
}
static int filled(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 31)) return 0;
    return 1;
}

static void test_is_vmarena(void) {
    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    CHECK(m && dladdr(m, &info) && strstr(info.dli_fname, "libvmarena"));
}

static void test_malloc(void) {
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b); /* malloc(0) gives unique pointers */
    free(a);
    free(b);
    for (size_t n = 1; n < (1 << 22); n = n * 3 + 1) {
        unsigned char *p = malloc(n);
        CHECK(p && aligned(p, 16) && malloc_usable_size(p) >= n);
        fill(p, n, (unsigned)n);
        CHECK(filled(p, n, (unsigned)n));
        free(p);
    }
    errno = 0;
    CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(PTRDIFF_MAX) == NULL && errno == ENOMEM);
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0);
}

static void test_calloc(void) {
    for (int round = 0; round < 3; round++) {
        for (size_t n = 1; n < (1 << 21); n = n * 5 + 3) {
            unsigned char *p = calloc(n, 1);
            CHECK(p && aligned(p, 16));
            for (size_t i = 0; i < n; i++) CHECK(p[i] == 0);
            memset(p, 0xAB, n); /* dirty it: the next round may get it back */
            free(p);
        }
    }
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM); /* overflow */
    void *z = calloc(0, 10);
    CHECK(z != NULL);
    free(z);
}

static void test_realloc(void) {
    unsigned char *p = realloc(NULL, 10); /* = malloc */
    CHECK(p);
    fill(p, 10, 7);
    size_t sizes[] = {100, 5000, 70000, 1 << 20, 9 << 20, 300, 3};
    size_t have = 10;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *q = realloc(p, sizes[i]);
        CHECK(q && aligned(q, 16));
        size_t keep = have < sizes[i] ? have : sizes[i];
        CHECK(filled(q, keep, 7));
        fill(q, sizes[i], 7);
        p = q;
        have = sizes[i];
    }
    errno = 0;
    CHECK(realloc(p, SIZE_MAX) == NULL && errno == ENOMEM);
    CHECK(filled(p, have, 7)); /* a failed realloc leaves the block */
    CHECK(realloc(p, 0) == NULL); /* glibc: frees and returns NULL */

    unsigned char *r = reallocarray(NULL, 10, 10);
    CHECK(r);
    fill(r, 100, 3);
    errno = 0;
    CHECK(reallocarray(r, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    CHECK(filled(r, 100, 3));
    r = reallocarray(r, 1000, 10);
    CHECK(r && filled(r, 100, 3));
    free(r);
}

static void test_aligned(void) {
    void *p = (void *)1;
    CHECK(posix_memalign(&p, 3, 10) == EINVAL && p == (void *)1);
    CHECK(posix_memalign(&p, 4, 10) == EINVAL); /* not a multiple of sizeof(void *) */
    size_t aligns[] = {8, 16, 64, 4096, 65536, 1 << 21, 1 << 26};
    for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++) {
        CHECK(posix_memalign(&p, aligns[i], 100) == 0 && aligned(p, aligns[i]));
        memset(p, 1, 100);
        free(p);
        CHECK(posix_memalign(&p, aligns[i], 0) == 0 && p != NULL);
        free(p);
        p = aligned_alloc(aligns[i], 3 * aligns[i]);
        CHECK(p && aligned(p, aligns[i]));
        free(p);
    }
    CHECK(posix_memalign(&p, 64, SIZE_MAX) == ENOMEM);
    errno = 0;
    CHECK(aligned_alloc(3, 30) == NULL && errno == EINVAL);
    p = memalign(48, 10); /* glibc rounds the alignment up to 64 */
    CHECK(p && aligned(p, 64));
    free(p);
    long page = sysconf(_SC_PAGESIZE);
    p = valloc(10);
    CHECK(p && aligned(p, page));
    free(p);
    p = pvalloc(1);
    CHECK(p && aligned(p, page) && malloc_usable_size(p) >= (size_t)page);
    free(p);
    /* Realloc of an aligned block keeps the contents. */
    CHECK(posix_memalign(&p, 4096, 5000) == 0);
    fill(p, 5000, 9);
    p = realloc(p, 20000);
    CHECK(p && filled(p, 5000, 9));
    free(p);
}

static void test_c23(void) {
    void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    void (*fas)(void *, size_t, size_t) =
        (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    CHECK(fs && fas);
    fs(malloc(100), 100);
    fs(NULL, 0);
    fas(aligned_alloc(256, 512), 256, 512);
    CHECK(malloc_trim(0) == 1);
}

/* Threads that allocate, pass blocks to each other through slots, and free what they get. */
#define SLOTS 256
static void *_Atomic slots[SLOTS];
static _Atomic int stop_churn;

static void *churn(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!stop_churn) {
        seed = seed * 1103515245 + 12345;
        size_t n = 1 + (seed >> 8) % (seed % 17 == 0 ? 300000 : 2000);
        unsigned char *p = malloc(n);
        if (!p) continue;
        p[0] = 1;
        p[n - 1] = 2;
        void *old = __atomic_exchange_n(&slots[(seed >> 4) % SLOTS], p, __ATOMIC_ACQ_REL);
        free(old);
        if (seed % 97 == 0) {
            void *q = realloc(calloc(1, 64), 4096);
            free(q);
        }
    }
    return NULL;
}

static void test_threads_and_fork(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1)) == 0);
    for (int round = 0; round < 30; round++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            alarm(20); /* a deadlocked allocator would hang the child: let SIGALRM end it */
            for (int i = 0; i < 20000; i++) {
                unsigned char *p = malloc(1 + i % 5000);
                unsigned char *q = calloc(1, 100 + i % 300);
                p[0] = q[99];
                p = realloc(p, 1 + i % 70000);
                free(p);
                free(q);
            }
            void *big = malloc(64 << 20);
            big = realloc(big, 128 << 20);
            free(big);
            malloc_trim(0);
            _exit(0);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    stop_churn = 1;
    for (int i = 0; i < 4; i++) CHECK(pthread_join(t[i], NULL) == 0);
    for (int i = 0; i < SLOTS; i++) free(slots[i]);
}

int main(void) {
    test_is_vmarena();
    test_malloc();
    test_calloc();
    test_realloc();
    test_aligned();
    test_c23();
    test_threads_and_fork();
    puts("ok");
    return 0;
}
