/*
 * socks_bench: the C clients of benchmarks/socks_bench.py (the servers are relay_bench.c's sink
 * and echo).
 *
 * In C so that the client costs little beside the proxy it measures: what the table shows is the
 * proxy (enchufe socks, microsocks, danted) or the relay, not the client.  Every client prints ONE
 * line of "key=value" pairs on stdout; cpu= is its own user+system time (getrusage), so the
 * harness can show that the client was not the bottleneck.
 *
 * PORT is a TCP port on 127.0.0.1.  The SOCKS5 handshake is done step by step as a client
 * library does it: greeting (no authentication), wait for the method; CONNECT 127.0.0.1:TARGET,
 * wait for the whole reply (IPv4, IPv6 or name bound address); only then data.
 *
 *   source PROXY TARGET MIB   handshake, then MIB × 1 MiB writes, shutdown(SHUT_WR), wait for
 *                             EOF (the sink closes after reading everything, and the proxy passes
 *                             the close back): bytes= seconds= gbps= cpu= (the clock starts after
 *                             the handshake)
 *   conns PROXY TARGET COUNT  COUNT times: connect, handshake, 1 byte to the echo server, read it
 *                             back, close: count= errors= seconds= cps= cpu=
 *   pconns PORT HDR COUNT     COUNT times: connect to a relay in front of the echo server, send
 *                             [a PROXY header, HDR = none|v1|v2, naming 127.0.0.1 and the
 *                             socket's own ports] and 1 byte in one write, read it back, close:
 *                             count= errors= seconds= cps= cpu=
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 20];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

static int dial(int port) {
    struct sockaddr_in s;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&s, 0, sizeof s);
    s.sin_family = AF_INET;
    s.sin_port = htons(port);
    s.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&s, sizeof s)) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Read exactly n bytes; 0 on success. */
static int read_full(int fd, unsigned char *out, size_t n) {
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, out + got, n - got);
        if (r <= 0)
            return -1;
        got += r;
    }
    return 0;
}

/* Connect to the proxy on PROXY and ask it for 127.0.0.1:TARGET; the socket, or -1. */
static int socks_connect(int proxy, int target) {
    int fd = dial(proxy);
    unsigned char m[2], r[262];
    unsigned char req[10] = {5, 1, 0, 1, 127, 0, 0, 1, (unsigned char)(target >> 8), (unsigned char)target};
    if (fd < 0)
        return -1;
    if (write(fd, "\x05\x01\x00", 3) != 3 || read_full(fd, m, 2) || m[0] != 5 || m[1] != 0)
        goto fail;
    if (write(fd, req, sizeof req) != sizeof req || read_full(fd, r, 4) || r[0] != 5 || r[1] != 0)
        goto fail;
    size_t rest = r[3] == 1 ? 6 : r[3] == 4 ? 18 : 0;
    if (r[3] == 3) {
        if (read_full(fd, r, 1))
            goto fail;
        rest = r[0] + 2;
    }
    if (!rest || read_full(fd, r, rest))
        goto fail;
    return fd;
fail:
    close(fd);
    return -1;
}

/* A PROXY header naming the socket's own ends (as a load balancer in front would): its length. */
static size_t proxy_header(int fd, const char *kind, unsigned char *out) {
    struct sockaddr_in me, peer;
    socklen_t a = sizeof me, b = sizeof peer;
    getsockname(fd, (struct sockaddr *)&me, &a);
    getpeername(fd, (struct sockaddr *)&peer, &b);
    if (!strcmp(kind, "v1"))
        return sprintf((char *)out, "PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", ntohs(me.sin_port),
                       ntohs(peer.sin_port));
    if (!strcmp(kind, "v2")) {
        memcpy(out, "\r\n\r\n\0\r\nQUIT\n", 12);
        out[12] = 0x21; /* version 2, PROXY */
        out[13] = 0x11; /* TCP over IPv4 */
        out[14] = 0;
        out[15] = 12;
        memcpy(out + 16, &me.sin_addr, 4);
        memcpy(out + 20, &peer.sin_addr, 4);
        memcpy(out + 24, &me.sin_port, 2);
        memcpy(out + 26, &peer.sin_port, 2);
        return 28;
    }
    return 0;
}

static int source(int proxy, int target, long mib) {
    int fd = socks_connect(proxy, target);
    if (fd < 0) {
        fprintf(stderr, "SOCKS CONNECT through port %d failed\n", proxy);
        return 1;
    }
    long long total = 0;
    double t0 = now();
    for (long i = 0; i < mib; i++) {
        for (size_t off = 0; off < sizeof buf;) {
            ssize_t w = write(fd, buf + off, sizeof buf - off);
            if (w <= 0) {
                perror("write");
                return 1;
            }
            off += w;
            total += w;
        }
    }
    shutdown(fd, SHUT_WR);
    while (read(fd, buf, sizeof buf) > 0)
        ;
    double dt = now() - t0;
    printf("bytes=%lld seconds=%.4f gbps=%.3f cpu=%.4f\n", total, dt, total * 8 / dt / 1e9, cpu());
    return 0;
}

/* conns (hdr NULL: through SOCKS to TARGET) or pconns (hdr: straight to a relay on PORT). */
static int conns(int port, int target, const char *hdr, long count) {
    long ok = 0, errors = 0;
    unsigned char msg[128], back[1];
    double t0 = now();
    for (long i = 0; i < count; i++) {
        int fd = hdr ? dial(port) : socks_connect(port, target);
        if (fd < 0) {
            errors++;
            continue;
        }
        size_t n = hdr ? proxy_header(fd, hdr, msg) : 0;
        msg[n++] = 'x';
        if (write(fd, msg, n) == (ssize_t)n && read_full(fd, back, 1) == 0 && back[0] == 'x')
            ok++;
        else
            errors++;
        close(fd);
    }
    double dt = now() - t0;
    printf("count=%ld errors=%ld seconds=%.4f cps=%.1f cpu=%.4f\n", ok, errors, dt, ok / dt, cpu());
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 5 && !strcmp(argv[1], "source"))
        return source(atoi(argv[2]), atoi(argv[3]), atol(argv[4]));
    if (argc == 5 && !strcmp(argv[1], "conns"))
        return conns(atoi(argv[2]), atoi(argv[3]), NULL, atol(argv[4]));
    if (argc == 5 && !strcmp(argv[1], "pconns"))
        return conns(atoi(argv[2]), 0, argv[3], atol(argv[4]));
    fprintf(stderr, "usage: see the comment at the top of socks_bench.c\n");
    return 2;
}
