/* idle.c: does memory go back when a program frees everything and goes quiet?
 *
 * The threads allocate TOTAL_MIB MiB in all, in blocks of 16 B - 256 KiB (sizes spread
 * evenly over the powers of two), write every block, and free them all; then they exit. The
 * main thread reads its resident set size before the work (the baseline), after it, and
 * after sleeping IDLE_MS milliseconds without calling the allocator (three of vmarena's
 * default purge delays). No malloc_trim: this is what a program gets without asking.
 *
 *   idle [threads [total_mib]]     defaults: 1 thread, 256 MiB
 *
 * Prints
 *   result idle threads=<n> ops=<blocks> rss_after_free_kib=<k> baseline_kib=<b> idle_kib=<i>
 * where rss_after_free_kib is read right after the last free.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

#define IDLE_MS 3000

static long bytes_per_thread;

static void *worker(void *arg)
{
    uint64_t rng = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    long cap = 1 << 16, n = 0, used = 0;
    unsigned char **blocks = malloc(cap * sizeof *blocks);
    if (!blocks)
        abort();
    while (used < bytes_per_thread) {
        size_t size = (size_t)16 << (xorshift(&rng) % 15); /* 16 B - 256 KiB */
        unsigned char *p = malloc(size);
        if (!p)
            abort();
        memset(p, (int)(size & 0xff) | 1, size);
        if (n == cap) {
            cap *= 2;
            blocks = realloc(blocks, cap * sizeof *blocks);
            if (!blocks)
                abort();
        }
        blocks[n++] = p;
        used += size;
    }
    for (long i = 0; i < n; i++) {
        if (blocks[i][0] == 0) /* every byte was written non-zero */
            abort();
        free(blocks[i]);
    }
    free(blocks);
    return (void *)n;
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? atol(argv[1]) : 1;
    long total_mib = argc > 2 ? atol(argv[2]) : 256;
    if (threads < 1)
        threads = 1;
    bytes_per_thread = (total_mib << 20) / threads;
    pthread_t tids[64];
    if (threads > 64)
        threads = 64;
    long baseline = rss_kib(), ops = 0;
    for (long i = 0; i < threads; i++)
        if (pthread_create(&tids[i], NULL, worker, (void *)(uintptr_t)(i + 1)))
            abort();
    for (long i = 0; i < threads; i++) {
        void *n;
        pthread_join(tids[i], &n);
        ops += (long)n;
    }
    long after = rss_kib();
    struct timespec idle = {IDLE_MS / 1000, (IDLE_MS % 1000) * 1000000L};
    nanosleep(&idle, NULL);
    long quiet = rss_kib();
    printf("result idle threads=%ld ops=%ld rss_after_free_kib=%ld baseline_kib=%ld idle_kib=%ld\n", threads, ops,
           after, baseline, quiet);
    return 0;
}
