/* prodcons.c: producers allocate, consumers free (xmalloc-style).
 *
 * The threads form producer/consumer pairs joined by a bounded lock-free single-producer,
 * single-consumer ring of QUEUE_LEN pointers. Producers allocate blocks of 16-512 bytes and
 * push them; consumers pop, check and free them, so every free is remote (of a block another
 * thread allocated). With threads = 1 one producer and one consumer run anyway (a single
 * thread cannot free remotely); an odd count rounds down to pairs (3 runs as 1 pair).
 * A full or empty ring yields the CPU, so oversubscribed runs (8 threads on 2 cores) keep
 * moving.
 *
 *   prodcons [threads [total_blocks]]     defaults: 1 (one pair), 4,000,000 blocks in all
 *
 * The total work is fixed and split between the pairs. Prints
 *   result prodcons threads=<n> ops=<blocks> rss_after_free_kib=<k>
 * with <n> the argument given.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define QUEUE_LEN 1024 /* a power of two */
#define MIN_SIZE 16
#define MAX_SIZE 512

/* Head and tail on lines of their own, so the two ends do not false-share. */
struct queue {
    _Alignas(64) _Atomic size_t head; /* next slot to pop, written by the consumer */
    _Alignas(64) _Atomic size_t tail; /* next slot to push, written by the producer */
    _Alignas(64) unsigned char *items[QUEUE_LEN];
    long blocks;     /* how many blocks pass through this queue */
    uint64_t seed;
};

static void push(struct queue *q, unsigned char *p)
{
    size_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    while (tail - atomic_load_explicit(&q->head, memory_order_acquire) == QUEUE_LEN)
        sched_yield();
    q->items[tail % QUEUE_LEN] = p;
    atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
}

static unsigned char *pop(struct queue *q)
{
    size_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    while (atomic_load_explicit(&q->tail, memory_order_acquire) == head)
        sched_yield();
    unsigned char *p = q->items[head % QUEUE_LEN];
    atomic_store_explicit(&q->head, head + 1, memory_order_release);
    return p;
}

/* A block records its size in its first two bytes and a check byte in its last one. */
static void *producer(void *arg)
{
    struct queue *q = arg;
    uint64_t rng = q->seed;
    for (long n = 0; n < q->blocks; n++) {
        uint16_t size = MIN_SIZE + xorshift(&rng) % (MAX_SIZE - MIN_SIZE + 1);
        unsigned char *p = malloc(size);
        if (!p)
            abort();
        memcpy(p, &size, sizeof size);
        p[size - 1] = (unsigned char)(size ^ 0xa5);
        push(q, p);
    }
    return NULL;
}

/* Checking each block keeps the compiler from eliding the pair and catches corruption. */
static void *consumer(void *arg)
{
    struct queue *q = arg;
    for (long n = 0; n < q->blocks; n++) {
        unsigned char *p = pop(q);
        uint16_t size;
        memcpy(&size, p, sizeof size);
        if (size < MIN_SIZE || size > MAX_SIZE || p[size - 1] != (unsigned char)(size ^ 0xa5)) {
            fprintf(stderr, "prodcons: corrupted block %p\n", (void *)p);
            abort();
        }
        free(p);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? atol(argv[1]) : 1;
    long total = argc > 2 ? atol(argv[2]) : 4000000;
    long pairs = threads / 2 > 1 ? threads / 2 : 1;
    struct queue *queues = aligned_alloc(64, pairs * sizeof *queues);
    pthread_t *tids = malloc(2 * pairs * sizeof *tids);
    if (!queues || !tids)
        abort();
    for (long i = 0; i < pairs; i++) {
        memset(&queues[i], 0, sizeof queues[i]);
        queues[i].blocks = total / pairs;
        queues[i].seed = 0x9e3779b97f4a7c15ull * (i + 1);
    }
    /* Start consumers and producers interleaved, so each pair gets going together. */
    for (long i = 0; i < pairs; i++)
        if (pthread_create(&tids[2 * i], NULL, consumer, &queues[i]) ||
            pthread_create(&tids[2 * i + 1], NULL, producer, &queues[i]))
            abort();
    for (long i = 0; i < 2 * pairs; i++)
        pthread_join(tids[i], NULL);

    long ops = queues[0].blocks * pairs;
    free(queues);
    free(tids);
    long rss = rss_after_free_kib();
    printf("result prodcons threads=%ld ops=%ld rss_after_free_kib=%ld\n", threads, ops, rss);
    return 0;
}
