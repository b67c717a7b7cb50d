/*
 * slow_epoll_del.c — an LD_PRELOAD shim for tests/daemon/test_concurrency.py
 * (test_sigterm_under_load_exits_cleanly): every epoll_ctl(EPOLL_CTL_DEL)
 * waits 2 ms before it runs.
 *
 * Why: libmicrohttpd 0.9.75's MHD_quiesce_daemon removes the listening
 * socket from each pool thread's epoll set while that thread may be
 * removing it too, and aborts the process when it loses ("Failed to remove
 * listen FD from epoll set"). The window is nanoseconds wide (one stop in
 * ~400 aborted); this shim widens it to milliseconds, so a galaxyd that
 * quiesces an epoll daemon again aborts in most stops under load instead
 * of once in a few hundred CI runs. galaxyd runs libmicrohttpd on poll()
 * (daemon/gx_server.c), where the shim changes nothing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/epoll.h>
#include <time.h>

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
    int (*real)(int, int, int, struct epoll_event *);
    *(void **)&real = dlsym(RTLD_NEXT, "epoll_ctl");
    if (op == EPOLL_CTL_DEL) {
        struct timespec ts = { 0, 2 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    return real(epfd, op, fd, ev);
}
