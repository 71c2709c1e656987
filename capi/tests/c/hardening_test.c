/* What a C program may rely on beyond malloc's edge cases, one case per run (argv[1]):
 *
 *   errno        free() never changes errno, even when it waits or makes system calls
 *   symbols      glibc's internal names (__libc_malloc, ...) and introspection functions
 *                (mallinfo, mallinfo2, mallopt, malloc_stats, malloc_info) are vmarena's
 *   fork-stats   a multi-threaded process forks; each child starts threads, lets them exit,
 *                starts another and prints vmarena's statistics (hundreds of times)
 *   dlopen-tls   dlopen and dlclose a library with thread-local data, from two threads,
 *                allocating in between (glibc >= 2.39 calls malloc from its TLS code)
 *   interior16   free(p + 16) on the thread that allocated p: must abort naming the address
 *   interior1    free(p + 1): likewise
 *
 * Built and run under LD_PRELOAD by tests/preload.rs. Prints "ok" and exits 0 on success,
 * names the failed check and exits 1 otherwise; the abort cases print "address 0x..." first. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
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

/* ------------------------------------------------------------------ errno */

static _Atomic int stop_threads;
static _Atomic long errno_changes, frees_checked;

/* A signal handler installed without SA_RESTART: a system call it interrupts returns EINTR.
 * Profilers (SIGPROF) and timers do this to real programs all the time. */
static void on_signal(int sig) { (void)sig; }

static void *free_keeps_errno(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!stop_threads) {
        seed = seed * 1103515245 + 12345;
        /* A large block (its malloc and free are write sessions on the arena lock) and a
         * small one; either free may wait for the long session the main thread runs. */
        void *big = malloc((1 << 20) + seed % 4096), *small = malloc(16 + seed % 1000);
        CHECK(big && small);
        errno = 0;
        free(big);
        free(small);
        if (errno != 0) errno_changes++;
        frees_checked++;
    }
    return NULL;
}

static pthread_t freers[2];

static void *signaller(void *arg) {
    (void)arg;
    while (!stop_threads) {
        for (int i = 0; i < 2; i++) pthread_kill(freers[i], SIGUSR1);
        usleep(50);
    }
    return NULL;
}

static int case_errno(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART */
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    enum { THREADS = 2 };
    pthread_t *t = freers, sig;
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, free_keeps_errno, (void *)(uintptr_t)(i + 1)) == 0);
    CHECK(pthread_create(&sig, NULL, signaller, NULL) == 0);
    for (int round = 0; round < 20; round++) {
        /* Long write sessions: purging large, touched, freed ranges (malloc_trim), while
         * signals reach the freeing threads, some of them waiting for the arena lock. */
        size_t n = (size_t)256 << 20;
        char *p = malloc(n);
        CHECK(p);
        for (size_t i = 0; i < n; i += 4096) p[i] = 1; /* 4 KiB pages, not huge ones */
        free(p);
        malloc_trim(0);
    }
    stop_threads = 1;
    CHECK(pthread_join(sig, NULL) == 0);
    for (int i = 0; i < THREADS; i++) CHECK(pthread_join(t[i], NULL) == 0);
    if (errno_changes != 0) {
        fprintf(stderr, "free changed errno in %ld of %ld rounds\n", errno_changes, frees_checked);
        return 1;
    }
    /* The other ways to free. */
    errno = 77;
    free(NULL);
    free(malloc(10));
    void (*cfree_fn)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
    CHECK(cfree_fn);
    cfree_fn(malloc(100 << 20));
    CHECK(realloc(malloc(3 << 20), 0) == NULL);
    CHECK(errno == 77);
    return 0;
}

/* ------------------------------------------------------------------ symbols */

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
/* Not in glibc's link-time symbols (mimalloc and jemalloc export it): looked up at run time. */
static int (*__posix_memalign)(void **, size_t, size_t);

static int in_vmarena(void *fn) {
    Dl_info info;
    return fn && dladdr(fn, &info) && info.dli_fname && strstr(info.dli_fname, "libvmarena");
}

static int case_symbols(void) {
    __posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_DEFAULT, "__posix_memalign");
    const char *names[] = {"__libc_malloc", "__libc_free",    "__libc_calloc",
                           "__libc_realloc", "__libc_memalign", "__libc_valloc",
                           "__libc_pvalloc", "__posix_memalign", "mallinfo",
                           "mallinfo2",      "mallopt",         "malloc_stats",
                           "malloc_info"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (!in_vmarena(dlsym(RTLD_DEFAULT, names[i]))) {
            fprintf(stderr, "%s is not vmarena's\n", names[i]);
            return 1;
        }
    }
    /* Memory from the internal names and the public ones mixes freely. */
    char *a = __libc_malloc(10);
    CHECK(a);
    strcpy(a, "vmarena");
    a = realloc(a, 100000);
    CHECK(a && strcmp(a, "vmarena") == 0);
    free(a);
    a = malloc(50);
    __libc_free(a);
    unsigned char *z = __libc_calloc(100, 10);
    for (int i = 0; i < 1000; i++) CHECK(z[i] == 0);
    z = __libc_realloc(z, 5000);
    CHECK(z && z[999] == 0);
    free(z);
    void *m = __libc_memalign(4096, 10);
    CHECK(m && ((uintptr_t)m & 4095) == 0);
    free(m);
    long page = sysconf(_SC_PAGESIZE);
    m = __libc_valloc(10);
    CHECK(m && ((uintptr_t)m & (page - 1)) == 0);
    __libc_free(m);
    m = __libc_pvalloc(1);
    CHECK(m && malloc_usable_size(m) >= (size_t)page);
    free(m);
    CHECK(__posix_memalign);
    CHECK(__posix_memalign(&m, 256, 1000) == 0 && ((uintptr_t)m & 255) == 0);
    free(m);
    CHECK(__posix_memalign(&m, 3, 10) == EINVAL);

    /* mallinfo2 reports vmarena's memory: 100 MiB more in use after allocating it. */
    struct mallinfo2 before = mallinfo2();
    char *big = malloc(100 << 20);
    memset(big, 1, 100 << 20);
    char *small[10000];
    for (int i = 0; i < 10000; i++) small[i] = malloc(1000);
    struct mallinfo2 after = mallinfo2();
    size_t in_use_before = before.uordblks + before.hblkhd, in_use_after = after.uordblks + after.hblkhd;
    CHECK(in_use_after >= in_use_before + (100 << 20) + 10000 * 1000);
    CHECK(after.hblks >= before.hblks + 1 && after.hblkhd >= before.hblkhd + (100 << 20));
    CHECK(after.uordblks >= before.uordblks + 10000 * 1000);
    CHECK(after.arena >= after.uordblks);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    struct mallinfo old = mallinfo();
#pragma GCC diagnostic pop
    CHECK(old.hblks >= 1 && old.uordblks > 0);
    free(big);
    for (int i = 0; i < 10000; i++) free(small[i]);
    struct mallinfo2 freed = mallinfo2();
    CHECK(freed.uordblks + freed.hblkhd + (100 << 20) <= in_use_after);

    /* mallopt accepts what glibc does (and ignores it), malloc_trim gives memory back. */
    CHECK(mallopt(M_TRIM_THRESHOLD, 1 << 20) == 1);
    CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1);
    CHECK(mallopt(M_ARENA_MAX, 2) == 1);
    CHECK(malloc_trim(0) == 1);

    /* malloc_info writes XML; anything but options 0 is EINVAL. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f && malloc_info(0, f) == 0);
    fclose(f);
    CHECK(text && strstr(text, "<malloc version=") && strstr(text, "</malloc>"));
    CHECK(strstr(text, "vmarena"));
    free(text);
    f = fopen("/dev/null", "w");
    CHECK(malloc_info(1, f) == EINVAL);
    fclose(f);

    /* malloc_stats prints to stderr (the test harness checks it). */
    malloc_stats();
    return 0;
}

/* ------------------------------------------------------------------ fork-stats */

/* vmarena's own report; looked up at run time (the program links against glibc only). */
static void (*vmarena_print_stats)(void);

static void *churn(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *keep[64] = {0};
    while (!stop_threads) {
        seed = seed * 1103515245 + 12345;
        /* Small blocks, large ones, and (one in four) 64-512 KiB blocks: those go through
         * the thread's cache of freed large blocks, whose slot shift a fork may cut. */
        size_t n = seed % 4 == 1 ? (64 << 10) + (seed >> 8) % (448 << 10)
                                 : 1 + (seed >> 8) % (seed % 13 == 0 ? 3000000 : 3000);
        int slot = (seed >> 4) % 64;
        free(keep[slot]);
        keep[slot] = malloc(n);
        CHECK(keep[slot]);
        memset(keep[slot], 1, n < 64 ? n : 64);
    }
    for (int i = 0; i < 64; i++) free(keep[i]);
    return NULL;
}

static void *short_lived(void *arg) {
    (void)arg;
    void *p[100];
    for (int i = 0; i < 100; i++) p[i] = malloc(1 + i * 37);
    for (int i = 0; i < 100; i++) free(p[i]);
    /* Two blocks of the size the dead threads' caches held, each filled with its own byte:
     * a block handed out twice would show the other's. */
    unsigned char *a = malloc(200 << 10), *b = malloc(200 << 10);
    CHECK(a && b && a != b);
    memset(a, 0xA1, 200 << 10);
    memset(b, 0xB2, 200 << 10);
    for (size_t i = 0; i < (200 << 10); i += 4096) CHECK(a[i] == 0xA1 && b[i] == 0xB2);
    free(a);
    free(b);
    return malloc(200); /* freed by the joiner */
}

static int case_fork_stats(int rounds) {
    vmarena_print_stats = (void (*)(void))dlsym(RTLD_DEFAULT, "vmarena_print_stats");
    CHECK(vmarena_print_stats);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        CHECK(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 7)) == 0);
    int failed = 0;
    for (int round = 0; round < rounds; round++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            alarm(10);
            /* Start threads, let them exit, start another, then print the statistics. */
            for (int k = 0; k < 2; k++) {
                pthread_t c;
                void *r;
                CHECK(pthread_create(&c, NULL, short_lived, NULL) == 0);
                CHECK(pthread_join(c, &r) == 0);
                free(r);
            }
            pthread_t c;
            CHECK(pthread_create(&c, NULL, short_lived, NULL) == 0);
            int devnull = open("/dev/null", 1);
            dup2(devnull, 2); /* the report goes to stderr: keep the test's output short */
            vmarena_print_stats();
            malloc_stats();
            void *r;
            CHECK(pthread_join(c, &r) == 0);
            free(r);
            free(malloc(64 << 20));
            _exit(0);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (failed < 5)
                fprintf(stderr, "round %d: child %s %d\n", round,
                        WIFSIGNALED(status) ? "killed by signal" : "exited with",
                        WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            failed++;
        }
    }
    stop_threads = 1;
    for (int i = 0; i < 3; i++) CHECK(pthread_join(t[i], NULL) == 0);
    if (failed) {
        fprintf(stderr, "%d of %d children failed\n", failed, rounds);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ dlopen-tls */

static const char *tls_library;

static void *load_unload(void *arg) {
    (void)arg;
    for (int i = 0; i < 300; i++) {
        void *h = dlopen(tls_library, RTLD_NOW | RTLD_LOCAL);
        CHECK(h);
        void (*touch)(int) = (void (*)(int))dlsym(h, "touch");
        CHECK(touch);
        touch(i);
        void *p = malloc(32 + i);
        CHECK(p);
        CHECK(dlclose(h) == 0);
        free(p);
        free(malloc(100));
    }
    return NULL;
}

static int case_dlopen_tls(const char *library) {
    tls_library = library;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, load_unload, NULL) == 0);
    load_unload(NULL);
    CHECK(pthread_join(t, NULL) == 0);
    return 0;
}

/* ------------------------------------------------------------------ interior pointers */

static int case_interior(size_t offset) {
    char *p = malloc(40);
    CHECK(p);
    memset(p, 7, 40);
    printf("address %p\n", (void *)(p + offset));
    fflush(stdout);
    free(p + offset);
    printf("not detected\n");
    return 0; /* the harness expects SIGABRT */
}

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    const char *c = argv[1];
    int result;
    if (!strcmp(c, "errno")) result = case_errno();
    else if (!strcmp(c, "symbols")) result = case_symbols();
    else if (!strcmp(c, "fork-stats")) result = case_fork_stats(argc > 2 ? atoi(argv[2]) : 300);
    else if (!strcmp(c, "dlopen-tls")) result = case_dlopen_tls(argv[2]);
    else if (!strcmp(c, "interior16")) result = case_interior(16);
    else if (!strcmp(c, "interior1")) result = case_interior(1);
    else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    if (result == 0) puts("ok");
    return result;
}
