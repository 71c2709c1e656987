/* largebursts.c: bursts of large blocks that live for a moment (buffers for a request, a
 * decoded image, a sort's scratch space).
 *
 * Each step frees the block allocated two steps before, then allocates a block of 1-100 MiB
 * (a power of two from 1 to 64 MiB times 1 to 2, so small sizes are as common as big ones) at
 * an alignment of 16 B to 64 MiB (posix_memalign), and writes one byte in every 4 KiB of it (as
 * a program filling it would fault it in): at most two blocks are live at once (double
 * buffering), and every block is freed within a few milliseconds. What the allocator keeps of the blocks it was given back,
 * above what is live, shows in the peak RSS.
 *
 *   largebursts [threads [steps]]      defaults: 1 thread (the only one used), 300 steps
 *
 * Prints
 *   result largebursts threads=1 ops=<steps> rss_after_free_kib=<k>
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define LIVE 2

int main(int argc, char **argv)
{
    long steps = argc > 2 ? atol(argv[2]) : 300;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    unsigned char *live[LIVE] = {0};
    size_t sizes[LIVE] = {0};
    for (long step = 0; step < steps; step++) {
        size_t size = ((size_t)1 << 20) << (xorshift(&rng) % 7);
        size += size / 1024 * (xorshift(&rng) % 1024);
        if (size > (size_t)100 << 20)
            size = (size_t)100 << 20;
        size_t align = (size_t)16 << (xorshift(&rng) % 23); /* 16 B .. 64 MiB */
        int slot = (int)(step % LIVE);
        if (live[slot]) {
            /* The block written LIVE steps ago: check a byte, then give it back. */
            if (live[slot][sizes[slot] - 1] != (unsigned char)sizes[slot])
                abort();
            free(live[slot]);
        }
        void *p = NULL;
        if (posix_memalign(&p, align, size) != 0)
            abort();
        unsigned char *block = p;
        for (size_t i = 0; i < size; i += 4096)
            block[i] = 1;
        block[size - 1] = (unsigned char)size;
        live[slot] = block;
        sizes[slot] = size;
    }
    for (int i = 0; i < LIVE; i++)
        free(live[i]);
    printf("result largebursts threads=1 ops=%ld rss_after_free_kib=%ld\n", steps,
           rss_after_free_kib());
    return 0;
}
