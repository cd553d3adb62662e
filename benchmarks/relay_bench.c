/*
 * relay_bench: the C client and servers of benchmarks/relay_bench.py.
 *
 * Kept in C so that the endpoints cost as little as possible: what the table shows is the relay
 * in the middle (kernel direct, socat, enchufe), not Python on the edges.  Compiled by
 * relay_bench.py with `gcc -O2` into a temporary folder at every run.
 *
 * ADDR is a TCP port on 127.0.0.1 ("9000"), a unix path ("/tmp/x.sock") or an abstract name
 * ("@name").  Every client prints ONE line of "key=value" pairs on stdout, read by the harness.
 *
 * Servers (run until killed):
 *   sink ADDR            stream: read and discard everything, close at EOF (epoll, many clients)
 *   echo ADDR            stream: send every byte back, close after EOF (epoll, many clients)
 *   stall ADDR           stream: accept one client, read nothing until SIGUSR1, then read all
 *   usink PORT           udp: count datagrams (answers "count" queries on PORT+1, see ucount)
 *   uecho PORT           udp: send every datagram back to its sender
 *
 * Clients:
 *   source ADDR SECONDS      write 1 MiB blocks for SECONDS, shutdown(SHUT_WR), wait for EOF:
 *                            bytes= seconds= gbps= (until the sink closed: all bytes delivered)
 *   ping ADDR SECONDS        1-byte round trips for SECONDS: rtps= p50_us= count=
 *   conns ADDR SECONDS       connect, send 1 byte, SHUT_WR, read until EOF, close; repeat:
 *                            cps= count= errors=
 *   ublast PORT COUNT SIZE   send COUNT datagrams of SIZE bytes as fast as the socket allows:
 *                            sent= seconds=
 *   ucount PORT RESET|GET    ask a usink (on PORT+1) for its count since the last RESET:
 *                            received= first= last= (monotonic seconds of first/last datagram)
 *   uping PORT SECONDS       1-byte UDP round trips (1 s timeout each, a lost one counts):
 *                            rtps= p50_us= count= lost=
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 20];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* A stream socket for ADDR: listening (bound) or connected. */
static int stream_socket(const char *addr, int listening) {
    int fd, one = 1;
    if (addr[0] == '/' || addr[0] == '@') {
        struct sockaddr_un u;
        socklen_t len;
        memset(&u, 0, sizeof u);
        u.sun_family = AF_UNIX;
        if (addr[0] == '@') {
            strncpy(u.sun_path + 1, addr + 1, sizeof u.sun_path - 2);
            len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(addr + 1);
        } else {
            strncpy(u.sun_path, addr, sizeof u.sun_path - 1);
            len = sizeof u;
            if (listening)
                unlink(addr);
        }
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (listening) {
            if (bind(fd, (struct sockaddr *)&u, len) || listen(fd, 4096))
                die("bind/listen");
        } else if (connect(fd, (struct sockaddr *)&u, len)) {
            close(fd);
            return -1;
        }
        return fd;
    }
    struct sockaddr_in s;
    memset(&s, 0, sizeof s);
    s.sin_family = AF_INET;
    s.sin_port = htons(atoi(addr));
    s.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (listening) {
        if (bind(fd, (struct sockaddr *)&s, sizeof s) || listen(fd, 4096))
            die("bind/listen");
    } else {
        if (connect(fd, (struct sockaddr *)&s, sizeof s)) {
            close(fd);
            return -1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static int udp_socket(int port, int bound) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int size = 4 << 20;
    struct sockaddr_in s;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    memset(&s, 0, sizeof s);
    s.sin_family = AF_INET;
    s.sin_port = htons(port);
    s.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bound ? bind(fd, (struct sockaddr *)&s, sizeof s) : connect(fd, (struct sockaddr *)&s, sizeof s))
        die(bound ? "bind" : "connect");
    return fd;
}

/* An epoll server for many stream clients: sink (echo=0) or echo (echo=1). */
static int serve_stream(const char *addr, int echo) {
    int listener = stream_socket(addr, 1), ep = epoll_create1(0), one = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener}, events[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int c = accept4(listener, NULL, NULL, 0);
                if (c < 0)
                    continue;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                ev.events = EPOLLIN;
                ev.data.fd = c;
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                close(fd); /* EOF (or reset): everything was read, or echoed */
                continue;
            }
            if (echo) {
                for (ssize_t off = 0; off < r;) { /* blocking socket: write it all */
                    ssize_t w = write(fd, buf + off, r - off);
                    if (w <= 0)
                        break;
                    off += w;
                }
            }
        }
    }
    return 0;
}

static volatile sig_atomic_t resumed;
static void on_usr1(int sig) {
    (void)sig;
    resumed = 1;
}

static int stall(const char *addr) {
    int listener = stream_socket(addr, 1);
    signal(SIGUSR1, on_usr1);
    int c = accept(listener, NULL, NULL);
    while (!resumed)
        pause();
    long long total = 0;
    ssize_t r;
    while ((r = read(c, buf, sizeof buf)) > 0)
        total += r;
    printf("received=%lld\n", total);
    fflush(stdout);
    close(c);
    return 0;
}

static int source(const char *addr, double seconds) {
    int fd = stream_socket(addr, 0);
    if (fd < 0)
        die("connect");
    long long total = 0;
    double t0 = now(), end = t0 + seconds;
    while (now() < end) {
        ssize_t w = write(fd, buf, sizeof buf);
        if (w <= 0)
            die("write");
        total += w;
    }
    shutdown(fd, SHUT_WR);
    while (read(fd, buf, sizeof buf) > 0) /* the sink closes once it has read everything */
        ;
    double dt = now() - t0;
    printf("bytes=%lld seconds=%.4f gbps=%.3f\n", total, dt, total * 8 / dt / 1e9);
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define MAX_SAMPLES 2000000
static double samples[MAX_SAMPLES];

static void report_rtt(int count, int lost, double dt) {
    qsort(samples, count, sizeof samples[0], cmp_double);
    double p50 = count ? samples[count / 2] : 0;
    printf("rtps=%.0f p50_us=%.1f count=%d lost=%d\n", count / dt, p50 * 1e6, count, lost);
}

static int ping(const char *addr, double seconds) {
    int fd = stream_socket(addr, 0), count = 0;
    if (fd < 0)
        die("connect");
    double t0 = now(), end = t0 + seconds, t = t0;
    while (t < end && count < MAX_SAMPLES) {
        if (write(fd, "x", 1) != 1 || read(fd, buf, 1) != 1)
            die("ping");
        double t1 = now();
        samples[count++] = t1 - t;
        t = t1;
    }
    report_rtt(count, 0, t - t0);
    return 0;
}

static int conns(const char *addr, double seconds) {
    int count = 0, errors = 0;
    double t0 = now(), end = t0 + seconds, t = t0;
    while (t < end) {
        int fd = stream_socket(addr, 0), ok = 0;
        if (fd >= 0) {
            if (write(fd, "x", 1) == 1) {
                shutdown(fd, SHUT_WR);
                ssize_t r;
                while ((r = read(fd, buf, sizeof buf)) > 0)
                    ok += r;
            }
            close(fd);
        }
        if (ok == 1)
            count++;
        else
            errors++;
        t = now();
    }
    printf("cps=%.0f count=%d errors=%d\n", count / (t - t0), count, errors);
    return 0;
}

/* usink: count datagrams on PORT; answer control queries on PORT+1. */
static int usink(int port) {
    int data = udp_socket(port, 1), ctl = udp_socket(port + 1, 1);
    long long received = 0;
    double first = 0, last = 0;
    struct pollfd fds[2] = {{.fd = data, .events = POLLIN}, {.fd = ctl, .events = POLLIN}};
    fcntl(data, F_SETFL, O_NONBLOCK);
    for (;;) {
        poll(fds, 2, -1);
        if (fds[0].revents) {
            while (recv(data, buf, sizeof buf, 0) >= 0) {
                last = now();
                if (!received++)
                    first = last;
            }
        }
        if (fds[1].revents) {
            struct sockaddr_in from;
            socklen_t len = sizeof from;
            char query[16] = {0}, answer[128];
            if (recvfrom(ctl, query, sizeof query - 1, 0, (struct sockaddr *)&from, &len) < 0)
                continue;
            while (recv(data, buf, sizeof buf, MSG_DONTWAIT) >= 0) { /* count what is queued */
                last = now();
                if (!received++)
                    first = last;
            }
            int n = snprintf(answer, sizeof answer, "received=%lld first=%.6f last=%.6f", received, first,
                             last);
            if (!strncmp(query, "RESET", 5))
                received = 0, first = last = 0;
            sendto(ctl, answer, n, 0, (struct sockaddr *)&from, len);
        }
    }
    return 0;
}

static int ucount(int port, const char *what) {
    int fd = udp_socket(port + 1, 0);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    send(fd, what, strlen(what), 0);
    ssize_t r = recv(fd, buf, sizeof buf - 1, 0);
    if (r < 0)
        die("ucount");
    buf[r] = 0;
    printf("%s\n", buf);
    return 0;
}

static int uecho(int port) {
    int fd = udp_socket(port, 1);
    for (;;) {
        struct sockaddr_storage from;
        socklen_t len = sizeof from;
        ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (r >= 0)
            sendto(fd, buf, r, 0, (struct sockaddr *)&from, len);
    }
    return 0;
}

static int ublast(int port, long count, int size) {
    int fd = udp_socket(port, 0);
    long sent = 0;
    double t0 = now();
    memset(buf, 'u', size);
    while (sent < count) {
        if (send(fd, buf, size, 0) == size)
            sent++;
        else if (errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED)
            die("send");
    }
    printf("sent=%ld seconds=%.4f\n", sent, now() - t0);
    return 0;
}

static int uping(int port, double seconds) {
    int fd = udp_socket(port, 0), count = 0, lost = 0;
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    double t0 = now(), end = t0 + seconds, t = t0;
    while (t < end && count < MAX_SAMPLES) {
        send(fd, "x", 1, 0);
        if (recv(fd, buf, sizeof buf, 0) == 1)
            samples[count++] = now() - t;
        else
            lost++;
        t = now();
    }
    report_rtt(count, lost, t - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: see the comment at the top of relay_bench.c\n");
        return 2;
    }
    const char *mode = argv[1], *addr = argv[2];
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(mode, "sink"))
        return serve_stream(addr, 0);
    if (!strcmp(mode, "echo"))
        return serve_stream(addr, 1);
    if (!strcmp(mode, "stall"))
        return stall(addr);
    if (!strcmp(mode, "usink"))
        return usink(atoi(addr));
    if (!strcmp(mode, "uecho"))
        return uecho(atoi(addr));
    if (argc < 4)
        return 2;
    if (!strcmp(mode, "source"))
        return source(addr, atof(argv[3]));
    if (!strcmp(mode, "ping"))
        return ping(addr, atof(argv[3]));
    if (!strcmp(mode, "conns"))
        return conns(addr, atof(argv[3]));
    if (!strcmp(mode, "ucount"))
        return ucount(atoi(addr), argv[3]);
    if (!strcmp(mode, "uping"))
        return uping(atoi(addr), atof(argv[3]));
    if (!strcmp(mode, "ublast") && argc >= 5)
        return ublast(atoi(addr), atol(argv[3]), atoi(argv[4]));
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
