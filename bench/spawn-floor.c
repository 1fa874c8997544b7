/* The spawn floor of bench/http.sh: N workers, each starting
 * PROGRAM ARGS... with posix_spawn and waiting for it, over and over, for
 * SECONDS; prints the completed runs per second. The command's output goes
 * to /dev/null. This is what one request costs at least when the work is
 * one process image: no HTTP, no lock, no decision. Workers are threads of
 * one process, or with a negative N, -N single-threaded processes (no
 * shared address space between spawners); the bench keeps the faster.
 *
 *   spawn-floor SECONDS N PROGRAM [ARGS...]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static char **argv_run;
static double stop_at;
static atomic_long runs;
static int devnull;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void *worker(void *unused) {
  (void)unused;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, devnull, 1);
  posix_spawn_file_actions_adddup2(&fa, devnull, 2);
  while (now() < stop_at) {
    pid_t pid;
    if (posix_spawn(&pid, argv_run[0], &fa, NULL, argv_run, environ) != 0) {
      perror("posix_spawn");
      exit(1);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "%s failed\n", argv_run[0]);
      exit(1);
    }
    atomic_fetch_add(&runs, 1);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: spawn-floor SECONDS THREADS PROGRAM [ARGS...]\n");
    return 2;
  }
  double seconds = atof(argv[1]);
  int threads = atoi(argv[2]), procs = 0;
  if (threads < 0) {
    procs = -threads;
    threads = 1;
  }
  argv_run = argv + 3;
  devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  pthread_t t[256];
  if (threads < 1 || threads > 256 || procs > 256 || devnull < 0) return 2;
  double start = now();
  stop_at = start + seconds;
  if (procs > 0) {
    int fds[2];
    if (pipe(fds) != 0) return 1;
    for (int i = 0; i < procs; i++) {
      pid_t p = fork();
      if (p < 0) return 1;
      if (p == 0) {
        close(fds[0]);
        worker(NULL);
        long n = atomic_load(&runs);
        if (write(fds[1], &n, sizeof n) != sizeof n) _exit(1);
        _exit(0);
      }
    }
    close(fds[1]);
    long total = 0, n;
    while (read(fds[0], &n, sizeof n) == sizeof n) total += n;
    while (wait(NULL) > 0) {}
    printf("%.1f\n", total / (now() - start));
    return 0;
  }
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, NULL);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  printf("%.1f\n", atomic_load(&runs) / (now() - start));
  return 0;
}
