/* link_relay: a long network link in user space (see link_emulator.py, which builds and drives
 * it). A TCP relay on 127.0.0.1 in front of 127.0.0.1:TARGET that delays each direction by
 * RTT/2 and caps each direction of the link at RATE bits/s, shared by all connections through
 * it (one link), without itself limiting what is in flight: it reads as fast as a side sends,
 * up to BUFFER bytes queued per direction of a connection (then it stops reading: TCP's
 * back-pressure, no drops), stamps each chunk with the time its last byte leaves the link
 * (serialisation, one chunk after the other) plus the one-way delay, and writes it on then.
 *
 * One thread, epoll, no per-chunk locks: the Python relay it replaces carried 600 MiB/s of
 * 1 MiB writes but only ~100 MiB/s of an SSH channel's 32 KiB packets (its threads and the
 * GIL), below the 1 Gbit/s link it was to emulate.
 *
 *   link_relay TARGET_PORT RTT_MS RATE_BITS BUFFER_BYTES     (RATE_BITS 0: no cap)
 *
 * Prints its port on stdout, then serves commands on stdin, one a line, each answered with one
 * line: "stats" -> "<connections> <bytes delivered to the target> <bytes delivered back>
 * <bytes taken from the client> <bytes taken from the target>" (taken: sent into the link,
 * also what a cut then drops), "cut" -> drops every connection ("ok"). Exits at EOF on stdin.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024)

typedef struct chunk {
    struct chunk *next;
    uint64_t due;          /* ns, CLOCK_MONOTONIC */
    size_t len, off;
    int eof;               /* the source's end: shut the destination's write side */
    char data[];
} chunk;

struct conn;

typedef struct {
    int src, dst;          /* indices into conn.fd */
    int link;              /* 0: towards the target, 1: back */
    chunk *head, *tail;
    size_t queued;
    int read_done, write_done, blocked;
} direction;

typedef struct conn {
    int fd[2];             /* 0: client, 1: target */
    direction d[2];        /* d[0]: client -> target, d[1]: target -> client */
    struct conn *next;
    int dead;
    int watched[2];        /* in the epoll set */
    uint32_t mask[2];      /* the events asked for */
} conn;

static uint64_t one_way_ns, buffer_bytes;
static double ns_per_byte;                   /* 0: no cap */
static uint64_t wire_free[2];                /* when each direction of the link is free */
static uint64_t relayed[2], taken[2], connections;  /* bytes out of / into the link */
static conn *conns;
static int ep;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what) { perror(what); exit(1); }

static void set_interest(conn *c) {
    for (int s = 0; s < 2; s++) {
        direction *in = &c->d[s], *out = &c->d[1 - s];  /* fd s: in's source, out's dest */
        if (!c->watched[s]) continue;
        if (in->read_done && out->write_done) {  /* nothing more to do with this socket */
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd[s], NULL);
            c->watched[s] = 0;
            continue;
        }
        uint32_t ev = 0;
        if (!in->read_done && in->queued < buffer_bytes) ev |= EPOLLIN;
        if (out->blocked && !out->write_done) ev |= EPOLLOUT;
        if (ev == c->mask[s]) continue;
        c->mask[s] = ev;
        struct epoll_event e = {.events = ev};
        e.data.u64 = (uint64_t)(uintptr_t)c | (uint64_t)s;  /* conns are 16-byte aligned */
        if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd[s], &e) < 0) die("epoll_ctl");
    }
}

static void free_queue(direction *d) {
    while (d->head) { chunk *n = d->head->next; free(d->head); d->head = n; }
    d->tail = NULL;
    d->queued = 0;
}

static void kill_conn(conn *c) {
    if (c->dead) return;
    c->dead = 1;
    for (int s = 0; s < 2; s++) {
        if (c->watched[s]) epoll_ctl(ep, EPOLL_CTL_DEL, c->fd[s], NULL);
        shutdown(c->fd[s], SHUT_RDWR);
        close(c->fd[s]);
        free_queue(&c->d[s]);
    }
}

static void enqueue(direction *d, chunk *k, uint64_t now) {
    uint64_t start = now > wire_free[d->link] ? now : wire_free[d->link];
    if (ns_per_byte > 0) start += (uint64_t)(k->len * ns_per_byte);
    wire_free[d->link] = ns_per_byte > 0 ? start : 0;
    k->due = (ns_per_byte > 0 ? start : now) + one_way_ns;
    k->next = NULL;
    if (d->tail) d->tail->next = k; else d->head = k;
    d->tail = k;
    d->queued += k->len;
}

static char readbuf[READ_SIZE];

static void do_read(conn *c, int s) {
    direction *d = &c->d[s];
    for (int rounds = 0; rounds < 8 && !d->read_done && d->queued < buffer_bytes; rounds++) {
        ssize_t n = recv(c->fd[d->src], readbuf, READ_SIZE, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n < 0) {  /* reset: the connection is over */
            kill_conn(c);
            return;
        }
        chunk *k = malloc(sizeof(chunk) + (size_t)n);
        if (!k) die("malloc");
        memcpy(k->data, readbuf, (size_t)n);  /* a copy: no 256 KiB mmap per small read */
        k->len = (size_t)n; k->off = 0; k->eof = n == 0;
        taken[d->link] += (uint64_t)n;
        if (n == 0) d->read_done = 1;
        enqueue(d, k, now_ns());
        if (n < READ_SIZE) return;
    }
}

/* Send what is due; returns the earliest due time still waiting (UINT64_MAX: none). */
static uint64_t flush(conn *c, int s, uint64_t now) {
    direction *d = &c->d[s];
    if (d->write_done) { free_queue(d); return UINT64_MAX; }
    while (d->head && !c->dead) {
        chunk *k = d->head;
        if (k->due > now) return k->due;
        if (k->eof) {
            shutdown(c->fd[d->dst], SHUT_WR);
            d->write_done = 1;
        } else {
            while (k->off < k->len) {
                ssize_t n = send(c->fd[d->dst], k->data + k->off, k->len - k->off,
                                 MSG_NOSIGNAL);
                if (n < 0) {
                    if (errno == EAGAIN) { d->blocked = 1; return UINT64_MAX; }
                    if (errno == EINTR) continue;
                    kill_conn(c);
                    return UINT64_MAX;
                }
                k->off += (size_t)n;
                relayed[s] += (uint64_t)n;
            }
        }
        d->queued -= k->len;
        d->head = k->next;
        if (!d->head) d->tail = NULL;
        free(k);
    }
    d->blocked = 0;
    return UINT64_MAX;
}

static int nonblocking(int fd) { return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void accept_one(int lsock, int target_port) {
    int cl = accept4(lsock, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cl < 0) return;
    int up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)target_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (up < 0 || connect(up, (struct sockaddr *)&a, sizeof a) < 0) {  /* blocking: loopback */
        close(cl);
        if (up >= 0) close(up);
        return;
    }
    nonblocking(up);
    int one = 1;  /* small SSH messages (window adjusts) must not wait for Nagle */
    setsockopt(cl, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn *c = calloc(1, sizeof(conn));
    if (!c) die("calloc");
    c->fd[0] = cl; c->fd[1] = up;
    c->d[0] = (direction){.src = 0, .dst = 1, .link = 0};
    c->d[1] = (direction){.src = 1, .dst = 0, .link = 1};
    for (int s = 0; s < 2; s++) {
        struct epoll_event e = {.events = EPOLLIN};
        e.data.u64 = (uint64_t)(uintptr_t)c | (uint64_t)s;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd[s], &e) < 0) die("epoll_ctl add");
        c->watched[s] = 1;
        c->mask[s] = EPOLLIN;
    }
    c->next = conns;
    conns = c;
    connections++;
}

static void command(FILE *out) {
    char line[64];
    ssize_t n = read(0, line, sizeof line - 1);
    if (n <= 0) exit(0);
    line[n] = 0;
    for (char *p = strtok(line, "\n"); p; p = strtok(NULL, "\n")) {
        if (!strcmp(p, "stats")) {
            fprintf(out, "%llu %llu %llu %llu %llu\n", (unsigned long long)connections,
                    (unsigned long long)relayed[0], (unsigned long long)relayed[1],
                    (unsigned long long)taken[0], (unsigned long long)taken[1]);
        } else if (!strcmp(p, "cut")) {
            for (conn *c = conns; c; c = c->next) kill_conn(c);
            fprintf(out, "ok\n");
        } else {
            fprintf(out, "? %s\n", p);
        }
    }
    fflush(out);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s TARGET_PORT RTT_MS RATE_BITS BUFFER_BYTES\n", argv[0]);
        return 2;
    }
    int target_port = atoi(argv[1]);
    one_way_ns = (uint64_t)(atof(argv[2]) * 1e6 / 2);
    double rate = atof(argv[3]);
    ns_per_byte = rate > 0 ? 8e9 / rate : 0;
    buffer_bytes = strtoull(argv[4], NULL, 10);
    signal(SIGPIPE, SIG_IGN);

    int lsock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(lsock, (struct sockaddr *)&a, sizeof a) < 0 || listen(lsock, 64) < 0 ||
        getsockname(lsock, (struct sockaddr *)&a, &len) < 0)
        die("listen");
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);

    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN};
    e.data.u64 = 1;  /* the listener */
    epoll_ctl(ep, EPOLL_CTL_ADD, lsock, &e);
    e.data.u64 = 2;  /* commands on stdin */
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &e);

    uint64_t next_due = UINT64_MAX;
    struct epoll_event evs[64];
    for (;;) {
        struct timespec ts, *tp = NULL;
        if (next_due != UINT64_MAX) {
            uint64_t now = now_ns();
            uint64_t wait = next_due > now ? next_due - now : 0;
            ts.tv_sec = (time_t)(wait / 1000000000u);
            ts.tv_nsec = (long)(wait % 1000000000u);
            tp = &ts;
        }
        int n = epoll_pwait2(ep, evs, 64, tp, NULL);
        if (n < 0 && errno != EINTR) die("epoll_pwait2");
        for (int i = 0; i < n; i++) {
            uint64_t u = evs[i].data.u64;
            if (u == 1) { accept_one(lsock, target_port); continue; }
            if (u == 2) { command(stdout); continue; }
            conn *c = (conn *)(uintptr_t)(u & ~(uint64_t)1);
            int s = (int)(u & 1);
            if (c->dead) continue;
            if (evs[i].events & EPOLLOUT) c->d[1 - s].blocked = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) do_read(c, s);
            if (!c->dead && (evs[i].events & (EPOLLHUP | EPOLLERR)) && c->d[s].read_done) {
                direction *out = &c->d[1 - s];  /* this socket is shut both ways */
                free_queue(out);
                out->write_done = 1;
                out->blocked = 0;
            }
        }
        uint64_t now = now_ns();
        next_due = UINT64_MAX;
        for (conn **pc = &conns; *pc;) {
            conn *c = *pc;
            for (int s = 0; s < 2 && !c->dead; s++) {
                if (c->d[s].blocked) continue;
                uint64_t due = flush(c, s, now);
                if (due < next_due) next_due = due;
            }
            if (!c->dead && c->d[0].write_done && c->d[1].write_done) kill_conn(c);
            if (c->dead) { *pc = c->next; free(c); continue; }
            set_interest(c);
            pc = &c->next;
        }
    }
}
