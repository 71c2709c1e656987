/* mixed.c: one thread, a mix of sizes with realloc, as in a typical single-threaded program.
 *
 * A table of SLOTS slots holds a working set of a few thousand live blocks (about 57% of the
 * slots are full in the steady state). Each step picks a random slot: an empty slot gets a
 * new block; a full one is freed (6 times in 8), grown by realloc to up to twice its size
 * (1 in 8) or shrunk to half (1 in 8). Random slots make the frees come in random order.
 * Sizes run from 8 B to 64 KiB, skewed to small: 70% are 8-256 B, 20% up to 2 KiB, 8% up to
 * 16 KiB, 2% up to 64 KiB.
 *
 *   mixed [threads [total_ops]]     defaults: 12,000,000 steps
 *
 * Single-threaded whatever the thread count given (it prints threads=1). Prints
 *   result mixed threads=1 ops=<steps> rss_after_free_kib=<k>
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "common.h"

#define SLOTS 5000
#define MIN_SIZE 8
#define MAX_SIZE 65536

struct slot {
    unsigned char *p;
    size_t size;
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static size_t uniform(size_t lo, size_t hi)
{
    return lo + xorshift(&rng) % (hi - lo + 1);
}

static size_t random_size(void)
{
    unsigned r = xorshift(&rng) % 100;
    if (r < 70)
        return uniform(MIN_SIZE, 256);
    if (r < 90)
        return uniform(257, 2048);
    if (r < 98)
        return uniform(2049, 16384);
    return uniform(16385, MAX_SIZE);
}

/* Every block of slot i carries the tag of i in its first and last byte; checking them before
 * each free and realloc keeps the compiler from eliding the calls, and checking the first byte
 * after a realloc checks that the contents moved with the block. */
static unsigned char tag(size_t i)
{
    return (unsigned char)(i * 131 + 7);
}

static void check(const struct slot *s, size_t i)
{
    if (s->p[0] != tag(i) || s->p[s->size - 1] != tag(i)) {
        fprintf(stderr, "mixed: corrupted block %p\n", (void *)s->p);
        abort();
    }
}

static void resize(struct slot *s, size_t i, size_t size)
{
    check(s, i);
    unsigned char *p = realloc(s->p, size);
    if (!p || p[0] != tag(i))
        abort();
    p[size - 1] = tag(i);
    s->p = p;
    s->size = size;
}

static void step(struct slot *s, size_t i)
{
    if (!s->p) {
        s->size = random_size();
        s->p = malloc(s->size);
        if (!s->p)
            abort();
        s->p[0] = s->p[s->size - 1] = tag(i);
        return;
    }
    switch (xorshift(&rng) % 8) {
    case 0:
        resize(s, i, s->size * 2 < MAX_SIZE ? s->size + uniform(1, s->size) : MAX_SIZE);
        break;
    case 1:
        resize(s, i, s->size / 2 > MIN_SIZE ? s->size / 2 : MIN_SIZE);
        break;
    default:
        check(s, i);
        free(s->p);
        s->p = NULL;
    }
}

int main(int argc, char **argv)
{
    long total = argc > 2 ? atol(argv[2]) : 12000000;
    static struct slot slots[SLOTS];
    for (long n = 0; n < total; n++) {
        size_t i = xorshift(&rng) % SLOTS;
        step(&slots[i], i);
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (slots[i].p) {
            check(&slots[i], i);
            free(slots[i].p);
        }
    long rss = rss_after_free_kib();
    printf("result mixed threads=1 ops=%ld rss_after_free_kib=%ld\n", total, rss);
    return 0;
}
