/* server.c: a larson-style server simulation.
 *
 * A shared array of SLOTS_PER_THREAD slots per thread holds blocks of 8-1000 bytes. Each
 * thread first fills its own share of the array, then repeatedly picks a random slot of the
 * WHOLE array, puts a new block of random size there and frees the block it replaced. Slots
 * are exchanged atomically, so with several threads most frees are of blocks another thread
 * allocated (remote frees), as in a server whose requests are handled by any worker.
 *
 *   server [threads [total_ops]]     defaults: 1 thread, 10,000,000 exchanges in all
 *
 * The total work is fixed and split between the threads, so wall times are comparable across
 * allocators (and across thread counts). Prints
 *   result server threads=<n> ops=<exchanges> rss_after_free_kib=<k>
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define SLOTS_PER_THREAD 10000
#define MIN_SIZE 8
#define MAX_SIZE 1000

static _Atomic(unsigned char *) *slots;
static size_t nslots;
static long ops_per_thread;
static pthread_barrier_t start;

/* A block records its size in its first two bytes and a check byte in its last one. */
static unsigned char *new_block(uint64_t *rng)
{
    uint16_t size = MIN_SIZE + xorshift(rng) % (MAX_SIZE - MIN_SIZE + 1);
    unsigned char *p = malloc(size);
    if (!p)
        abort();
    memcpy(p, &size, sizeof size);
    p[size - 1] = (unsigned char)(size ^ 0x5a);
    return p;
}

/* Checking the block before freeing it keeps the compiler from eliding the malloc/free pair
 * and catches an allocator that handed out overlapping blocks. */
static void check_and_free(unsigned char *p)
{
    uint16_t size;
    if (!p)
        return;
    memcpy(&size, p, sizeof size);
    if (size < MIN_SIZE || size > MAX_SIZE || p[size - 1] != (unsigned char)(size ^ 0x5a)) {
        fprintf(stderr, "server: corrupted block %p\n", (void *)p);
        abort();
    }
    free(p);
}

static void *worker(void *arg)
{
    size_t id = (size_t)arg;
    uint64_t rng = 0x9e3779b97f4a7c15ull * (id + 1);
    for (size_t i = id * SLOTS_PER_THREAD; i < (id + 1) * SLOTS_PER_THREAD; i++)
        atomic_store_explicit(&slots[i], new_block(&rng), memory_order_release);
    pthread_barrier_wait(&start);
    for (long n = 0; n < ops_per_thread; n++) {
        size_t i = xorshift(&rng) % nslots;
        unsigned char *old = atomic_exchange_explicit(&slots[i], new_block(&rng), memory_order_acq_rel);
        check_and_free(old);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? atol(argv[1]) : 1;
    long total = argc > 2 ? atol(argv[2]) : 10000000;
    if (threads < 1)
        threads = 1;
    nslots = (size_t)threads * SLOTS_PER_THREAD;
    ops_per_thread = total / threads;
    slots = calloc(nslots, sizeof *slots);
    pthread_t *tids = malloc(threads * sizeof *tids);
    if (!slots || !tids)
        abort();
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (long t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, worker, (void *)(size_t)t))
            abort();
    for (long t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    pthread_barrier_destroy(&start);

    for (size_t i = 0; i < nslots; i++)
        check_and_free(atomic_load(&slots[i]));
    free(slots);
    free(tids);
    long rss = rss_after_free_kib();
    printf("result server threads=%ld ops=%ld rss_after_free_kib=%ld\n", threads, ops_per_thread * threads, rss);
    return 0;
}
