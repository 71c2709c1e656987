/* One malloc and one free of the same size, n times: the C entry points' fast paths, for
 * scripts/op_counts.sh (callgrind counts the instructions inside malloc and free).
 * Usage: pairs <size> <n> */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <size> <n>\n", argv[0]);
        return 2;
    }
    size_t size = strtoul(argv[1], NULL, 10);
    long n = strtol(argv[2], NULL, 10);
    void *volatile sink;
    for (long i = 0; i < n; i++) {
        void *p = malloc(size);
        sink = p;
        free(p);
    }
    (void)sink;
    return 0;
}
