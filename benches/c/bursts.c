/* bursts.c: bursts of allocation with mixed lifetimes, across threads (mstress-style).
 *
 * The work runs in ROUNDS rounds, and every round starts its threads anew (a thread pool that
 * is torn down and rebuilt). In each step a thread
 *   - allocates a short-lived block into its working set (7 steps in 8), or a long-lived one
 *     it hands over at the end of the round (1 in 8): power-of-two sizes, 8 B - 2 KiB for
 *     short-lived blocks and 8 B - 8 KiB for long-lived ones, one block in a hundred ten
 *     times bigger;
 *   - frees a random block of its working set (2 steps in 3);
 *   - swaps a random block of its working set with a slot of an array shared by all threads
 *     and all rounds (1 step in 4), so blocks move between threads and outlive rounds.
 * A thread frees its working set when its steps are done; its long-lived blocks are freed by
 * the main thread at the end of the NEXT round, so lifetimes span threads and rounds. Memory
 * in use rises and falls in bursts, which is what shows how much an allocator keeps.
 *
 *   bursts [threads [total_steps]]     defaults: 1 thread, 4,000,000 steps in all
 *
 * The total work is fixed and split between the threads. Prints
 *   result bursts threads=<n> ops=<steps> rss_after_free_kib=<k>
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define ROUNDS 10
#define TRANSFERS 1000

struct thread {
    long steps;
    uint64_t seed;
    unsigned char **kept; /* long-lived blocks, freed by main a round later */
    long nkept;
};

static _Atomic(unsigned char *) transfer[TRANSFERS];

/* A block records its size in its first four bytes and a check byte in its last one. */
static unsigned char *new_block(uint64_t *rng, unsigned max_shift)
{
    uint32_t size = 8u << (xorshift(rng) % (max_shift - 2));
    if (xorshift(rng) % 100 == 0)
        size *= 10;
    unsigned char *p = malloc(size);
    if (!p)
        abort();
    memcpy(p, &size, sizeof size);
    p[size - 1] = (unsigned char)(size ^ 0x3c);
    return p;
}

/* Checking before freeing keeps the pair from being elided and catches overlapping blocks. */
static void check_and_free(unsigned char *p)
{
    if (!p)
        return;
    uint32_t size;
    memcpy(&size, p, sizeof size);
    if (size < 8 || size > (80u << 10) || p[size - 1] != (unsigned char)(size ^ 0x3c)) {
        fprintf(stderr, "bursts: corrupted block %p\n", (void *)p);
        abort();
    }
    free(p);
}

static void *worker(void *arg)
{
    struct thread *t = arg;
    uint64_t rng = t->seed;
    long cap = 1024, top = 0;
    unsigned char **work = malloc(cap * sizeof *work);
    t->kept = malloc((t->steps / 8 + 16) * sizeof *t->kept);
    t->nkept = 0;
    if (!work || !t->kept)
        abort();
    for (long n = 0; n < t->steps; n++) {
        if (xorshift(&rng) % 8 != 0) {
            if (top == cap) {
                cap *= 2;
                work = realloc(work, cap * sizeof *work);
                if (!work)
                    abort();
            }
            work[top++] = new_block(&rng, 11); /* 8 B - 2 KiB */
        } else if (t->nkept < t->steps / 8 + 16) {
            t->kept[t->nkept++] = new_block(&rng, 13); /* 8 B - 8 KiB */
        }
        if (top > 0 && xorshift(&rng) % 3 != 0) {
            long i = xorshift(&rng) % top;
            check_and_free(work[i]);
            work[i] = work[--top];
        }
        if (top > 0 && xorshift(&rng) % 4 == 0) {
            long i = xorshift(&rng) % top;
            unsigned char *q = atomic_exchange(&transfer[xorshift(&rng) % TRANSFERS], work[i]);
            if (q)
                work[i] = q;
            else
                work[i] = work[--top];
        }
    }
    for (long i = 0; i < top; i++)
        check_and_free(work[i]);
    free(work);
    return NULL;
}

static void free_kept(struct thread *ts, long threads)
{
    for (long i = 0; i < threads; i++) {
        for (long k = 0; k < ts[i].nkept; k++)
            check_and_free(ts[i].kept[k]);
        free(ts[i].kept);
        ts[i].kept = NULL;
        ts[i].nkept = 0;
    }
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? atol(argv[1]) : 1;
    long total = argc > 2 ? atol(argv[2]) : 4000000;
    if (threads < 1)
        threads = 1;
    long steps = total / ROUNDS / threads;
    struct thread *now = calloc(threads, sizeof *now), *last = calloc(threads, sizeof *last);
    pthread_t *tids = malloc(threads * sizeof *tids);
    if (!now || !last || !tids)
        abort();
    for (int round = 0; round < ROUNDS; round++) {
        for (long i = 0; i < threads; i++) {
            now[i].steps = steps;
            now[i].seed = 0x9e3779b97f4a7c15ull * (round * threads + i + 1);
            if (pthread_create(&tids[i], NULL, worker, &now[i]))
                abort();
        }
        for (long i = 0; i < threads; i++)
            pthread_join(tids[i], NULL);
        free_kept(last, threads); /* the round before's long-lived blocks */
        struct thread *swap = last;
        last = now;
        now = swap;
    }
    free_kept(last, threads);
    for (int i = 0; i < TRANSFERS; i++)
        check_and_free(atomic_exchange(&transfer[i], NULL));
    free(now);
    free(last);
    free(tids);
    long rss = rss_after_free_kib();
    printf("result bursts threads=%ld ops=%ld rss_after_free_kib=%ld\n", threads, steps * ROUNDS * threads, rss);
    return 0;
}
