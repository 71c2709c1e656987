/* A C program whose functions keep known amounts live and churn a known amount, for the heap
 * profile's test under LD_PRELOAD (capi/tests/preload.rs). With "dump <path>" it also writes
 * a profile through vmarena_profile_dump before exiting. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1 << 20)

__attribute__((noinline)) void keep_64k_blocks(void **out) {
    for (int i = 0; i < 1024; i++) { /* 64 MiB */
        out[i] = malloc(64 << 10);
        memset(out[i], 1, 64 << 10);
    }
}

__attribute__((noinline)) void keep_256b_blocks(void **out) {
    for (int i = 0; i < (128 << 10); i++) { /* 32 MiB, zeroed */
        out[i] = calloc(1, 256);
        ((volatile char *)out[i])[0] = 2;
    }
}

__attribute__((noinline)) void keep_4m_blocks(void **out) {
    for (int i = 0; i < 4; i++) { /* 16 MiB */
        out[i] = malloc(4 * MIB);
        memset(out[i], 3, 4 * MIB);
    }
}

__attribute__((noinline)) void churn(void) {
    for (int i = 0; i < 200000; i++) { /* 200 MB allocated, nothing kept */
        volatile char *p = malloc(1000);
        p[0] = 4;
        free((void *)p);
    }
}

int main(int argc, char **argv) {
    void **a = malloc(1024 * sizeof(void *));
    void **b = malloc((128 << 10) * sizeof(void *));
    void **c = malloc(4 * sizeof(void *));
    keep_64k_blocks(a);
    keep_256b_blocks(b);
    keep_4m_blocks(c);
    churn();
    if (argc == 3 && strcmp(argv[1], "dump") == 0) {
        int (*dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "vmarena_profile_dump");
        if (dump == NULL || dump(argv[2]) != 0) {
            perror("vmarena_profile_dump");
            return 1;
        }
    }
    printf("%p %p %p\n", (void *)a, (void *)b, (void *)c); /* all live at exit */
    return 0;
}
