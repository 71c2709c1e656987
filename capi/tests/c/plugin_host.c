/* A host that loads a Rust plugin built on vmarena (tests/plugin), calls it from threads,
 * unloads it while those threads still run, lets them exit, and forks. A thread-exit hook or
 * fork handler the plugin left behind would run in unmapped code. Prints "ok" and exits 0 on
 * success. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "FAIL %s:%d: %s (%s)\n", __FILE__, __LINE__, #c, dlerror()); \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

static uint64_t (*work)(uint64_t);
static pthread_barrier_t worked, unloaded;

static void *worker(void *arg) {
    uint64_t n = (uint64_t)(uintptr_t)arg;
    CHECK(work(n) == n * (n - 1) / 2 + 100 + 13 * 4950);
    pthread_barrier_wait(&worked);
    pthread_barrier_wait(&unloaded);
    return NULL; /* exits after the plugin is gone */
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    for (int round = 0; round < 3; round++) {
        void *plugin = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        CHECK(plugin);
        work = (uint64_t(*)(uint64_t))dlsym(plugin, "plugin_work");
        CHECK(work);
        enum { THREADS = 3 };
        pthread_barrier_init(&worked, NULL, THREADS + 1);
        pthread_barrier_init(&unloaded, NULL, THREADS + 1);
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++)
            CHECK(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(1000 + i)) == 0);
        pthread_barrier_wait(&worked);
        CHECK(dlclose(plugin) == 0);
        /* Is it really gone? Then nothing of it may run any more. */
        void *again = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD);
        if (again) {
            fprintf(stderr, "note: the plugin stayed loaded after dlclose\n");
            dlclose(again);
        }
        pthread_barrier_wait(&unloaded);
        for (int i = 0; i < THREADS; i++) CHECK(pthread_join(t[i], NULL) == 0);
        pthread_barrier_destroy(&worked);
        pthread_barrier_destroy(&unloaded);
    }
    /* The plugin registered fork handlers; unloading it must have removed them. */
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(0);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    puts("ok");
    return 0;
}
