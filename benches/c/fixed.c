/* fixed.c: a tight malloc/free loop of one fixed size on every thread.
 *
 * Each thread keeps a ring of RING live blocks of one size; each step frees the block in a
 * random ring slot and allocates a new one there, so blocks are freed in random rather than
 * strictly LIFO order, but the working set stays small. All frees are local (by the thread
 * that allocated the block): this measures the allocator's fast paths.
 *
 *   fixed [threads [size [total_ops]]]     defaults: 1 thread, 64 bytes, 100,000,000 pairs in all
 *
 * The total work is fixed and split between the threads. Prints
 *   result fixed threads=<n> ops=<malloc+free pairs> rss_after_free_kib=<k>
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>

#include "common.h"

#define RING 100

static size_t size;
static long ops_per_thread;

/* First and last byte carry the same tag; checking them before the free keeps the compiler
 * from eliding the pair and catches an allocator that handed out overlapping blocks. */
static void check_and_free(unsigned char *p)
{
    if (p[0] != p[size - 1]) {
        fprintf(stderr, "fixed: corrupted block %p\n", (void *)p);
        abort();
    }
    free(p);
}

static unsigned char *new_block(unsigned char tag)
{
    unsigned char *p = malloc(size);
    if (!p)
        abort();
    p[0] = tag;
    p[size - 1] = tag;
    return p;
}

static void *worker(void *arg)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull * ((size_t)arg + 1);
    unsigned char *ring[RING];
    for (int i = 0; i < RING; i++)
        ring[i] = new_block((unsigned char)i);
    for (long n = 0; n < ops_per_thread; n++) {
        int i = xorshift(&rng) % RING;
        check_and_free(ring[i]);
        ring[i] = new_block((unsigned char)n);
    }
    for (int i = 0; i < RING; i++)
        check_and_free(ring[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? atol(argv[1]) : 1;
    long bytes = argc > 2 ? atol(argv[2]) : 64;
    long total = argc > 3 ? atol(argv[3]) : 100000000;
    if (threads < 1)
        threads = 1;
    size = bytes > 0 ? (size_t)bytes : 1;
    ops_per_thread = total / threads;
    pthread_t *tids = malloc(threads * sizeof *tids);
    if (!tids)
        abort();
    for (long t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, worker, (void *)(size_t)t))
            abort();
    for (long t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    free(tids);
    long rss = rss_after_free_kib();
    printf("result fixed threads=%ld ops=%ld rss_after_free_kib=%ld\n", threads, ops_per_thread * threads, rss);
    return 0;
}
