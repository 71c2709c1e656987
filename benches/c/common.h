/* common.h: what the benchmark programs share: a small deterministic RNG, and resident set
 * sizes read without allocating (no stdio on the /proc file), before or after handing free
 * memory back. Each program defines _GNU_SOURCE before including anything. */
#ifndef VMARENA_BENCH_COMMON_H
#define VMARENA_BENCH_COMMON_H

#include <dlfcn.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

/* xorshift64: deterministic and cheap, good enough to pick sizes and slots. */
static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Resident set size in KiB, or -1. */
static inline long rss_kib(void)
{
    char buf[128] = {0};
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    long size, resident;
    if (got <= 0 || sscanf(buf, "%ld %ld", &size, &resident) != 2)
        return -1;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Resident set size after malloc_trim(0), where the allocator has one (found with dlsym:
 * only glibc and vmarena do). */
static inline long rss_after_free_kib(void)
{
    int (*trim)(size_t) = (int (*)(size_t))dlsym(RTLD_DEFAULT, "malloc_trim");
    if (trim)
        trim(0);
    return rss_kib();
}

#endif
