/* Master process: reads the config, prepares models, owns the listening
 * sockets, forks and supervises the worker pool. Signal handlers only write
 * the signal number into a self-pipe; the loop below acts on it. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mmembed/cache.h"
#include "mmembed/embed.h"
#include "mmembed/gpuq.h"
#include "mmembed/log.h"
#include "mmembed/sandbox.h"
#include "mmembed/serve.h"

/* A worker slot that lives less than this after (re)start counts as a crash loop. */
#define QUICK_DEATH_US 5000000
#define BACKOFF_FIRST 0.1

/* ---------------------------------------------------------------- state */

typedef struct {
    char addr[MM_PATH_MAX];
    int is_unix;
    int fd;                 /* -1 while closed (long back-off) */
    int refs;               /* generations using it */
} sock_t;

/* An executor (one per device that models name; docs/GPU.md): its queue,
 * what the workers call it through, and its restart bookkeeping. */
typedef struct {
    mm_exec_ctx_t ctx;              /* device, models, queue */
    mm_exec_remote_t remote[MM_MAX_MODELS];   /* per served model (by index) on this executor */
    pid_t pid;                      /* 0 while not running */
    int64_t started;
    int fails;
    int64_t restart_at;             /* 0 = nothing pending */
    int stop_sent, hung;
} exec_t;

typedef struct gen {
    int id;
    mm_conf_t conf;
    mm_embed_t *embed;
    int sock[MM_MAX_WORKERS];       /* index into socks[] per worker position */
    int live;                       /* children of this generation alive */
    int retired;                    /* replaced by a newer generation */
    /* per position restart bookkeeping (current generation only) */
    int64_t restart_at[MM_MAX_WORKERS];   /* 0 = nothing pending */
    int fails[MM_MAX_WORKERS];
    int child[MM_MAX_WORKERS];            /* sb slot of the live worker, -1 */
    int standin[MM_MAX_WORKERS];          /* sb slot of a back-off stand-in, -1 */
    int overflow_sock;                    /* socket of the 503 overflow process, -1 if none */
    int overflow_slot;                    /* its sb slot, -1 */
    exec_t ex[MM_MAX_MODELS];             /* executors of this generation's models */
    mm_exec_view_t exview[MM_MAX_MODELS]; /* what its workers see of them */
    int n_ex;
    struct gen *next;
} gen_t;

typedef struct {
    pid_t pid;
    gen_t *gen;
    int index;
    int64_t started;        /* monotonic */
    int timed_out;
    int wedged;             /* killed because its heartbeat stopped */
    int stop_sent;
    int standin;            /* answers 503 while the slot waits out a back-off */
} child_t;

static mm_scoreboard_t *sb;
static mm_cache_t *cache;      /* shared embedding cache, survives restarts and reloads */
static child_t children[MM_SB_SLOTS];
static sock_t socks[2 * MM_MAX_WORKERS];
static int n_socks;
static gen_t *cur;              /* current generation */
static gen_t *gens;             /* all live generations (list) */
static const char *conf_path;
static int sig_pipe[2];
static enum { RUNNING, STOPPING } mstate = RUNNING;
static int64_t stop_deadline;
static int fast_stop;

static void on_signal(int sig)
{
    char c = (char)sig;
    ssize_t w = write(sig_pipe[1], &c, 1);
    (void)w;
}

/* ---------------------------------------------------------------- sockets */

static int ids_for(const mm_conf_t *c, uid_t *uid, gid_t *gid)
{
    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (geteuid() != 0) return 0;
    if (c->user[0]) {
        struct passwd *pw = getpwnam(c->user);
        if (!pw) return -1;
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
    }
    if (c->group[0]) {
        struct group *gr = getgrnam(c->group);
        if (!gr) return -1;
        *gid = gr->gr_gid;
    }
    return 0;
}

static int open_socket(const mm_conf_t *c, sock_t *s)
{
    int fd;
    if (s->is_unix) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        if (strlen(s->addr) >= sizeof sa.sun_path) return -1;
        memcpy(sa.sun_path, s->addr, strlen(s->addr) + 1);
        unlink(s->addr);   /* stale socket from an earlier run */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            mm_log_error("bind %s: %s", s->addr, strerror(errno));
            close(fd);
            return -1;
        }
        chmod(s->addr, (mode_t)c->socket_mode);
        uid_t uid;
        gid_t gid;
        if (ids_for(c, &uid, &gid) == 0 && (uid != (uid_t)-1 || gid != (gid_t)-1)) {
            if (chown(s->addr, uid, gid) < 0) mm_log_warn("chown %s: %s", s->addr, strerror(errno));
        }
    } else {
        char host[256];
        const char *colon = strrchr(s->addr, ':');
        snprintf(host, sizeof host, "%.*s", (int)(colon - s->addr), s->addr);
        struct addrinfo hints, *ai = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        if (getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai) != 0 || !ai) {
            mm_log_error("cannot resolve listen address %s", s->addr);
            return -1;
        }
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            mm_log_error("bind %s: %s", s->addr, strerror(errno));
            if (fd >= 0) close(fd);
            freeaddrinfo(ai);
            return -1;
        }
        freeaddrinfo(ai);
    }
    if (listen(fd, 1024) < 0) {
        mm_log_error("listen %s: %s", s->addr, strerror(errno));
        close(fd);
        return -1;
    }
    s->fd = fd;
    return 0;
}

static void close_socket(sock_t *s)
{
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    if (s->is_unix) unlink(s->addr);
}

/* Find or create the socket for an address; reused across reloads so that
 * a connection is never refused while workers are replaced. */
static int get_socket(const mm_conf_t *c, const char *addr, int is_unix)
{
    for (int i = 0; i < n_socks; i++)
        if (socks[i].refs > 0 && strcmp(socks[i].addr, addr) == 0) {
            if (socks[i].fd < 0 && open_socket(c, &socks[i]) < 0) return -1;
            socks[i].refs++;
            return i;
        }
    int slot = -1;
    for (int i = 0; i < n_socks; i++)
        if (socks[i].refs == 0) { slot = i; break; }
    if (slot < 0) {
        if (n_socks >= (int)MM_ARRAY_LEN(socks)) return -1;
        slot = n_socks++;
    }
    sock_t *s = &socks[slot];
    memset(s, 0, sizeof *s);
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    s->is_unix = is_unix;
    if (open_socket(c, s) < 0) return -1;
    s->refs = 1;
    return slot;
}

static void put_socket(int i)
{
    if (i < 0) return;
    if (--socks[i].refs == 0) close_socket(&socks[i]);
}

/* ---------------------------------------------------------------- executors */

/* One executor per device named by a model (device != "cpu"), "cuda" being
 * "cuda:0"; the workers' encode calls for those models go to its queue. */
static int exec_setup(gen_t *g, char *err, size_t errlen)
{
    const mm_conf_t *c = &g->conf;
    for (int i = 0; i < c->n_models; i++) {
        int kind = mm_conf_device_kind(c->models[i].device);
        if (kind == MM_DEV_WORKER) continue;
        char dev[16];
        snprintf(dev, sizeof dev, "%s", strcmp(c->models[i].device, "cuda") ? c->models[i].device : "cuda:0");
        int k = 0;
        while (k < g->n_ex && strcmp(g->ex[k].ctx.device, dev)) k++;
        if (k == g->n_ex) {
            exec_t *x = &g->ex[g->n_ex++];
            memset(x, 0, sizeof *x);
            snprintf(x->ctx.device, sizeof x->ctx.device, "%s", dev);
            x->ctx.conf = c;
            x->ctx.embed = g->embed;
        }
        exec_t *x = &g->ex[k];
        x->ctx.models[x->ctx.n_models++] = i;
#ifndef MM_WITH_CUDA
        if (kind == MM_DEV_GPU)
            mm_log_warn("model '%s': device \"%s\", but this build has no CUDA backend (make GPU=1): its executor "
                        "cannot start and its requests are answered 503", c->models[i].name, c->models[i].device);
#endif
    }
    for (int k = 0; k < g->n_ex; k++) {
        exec_t *x = &g->ex[k];
        int dim = 1;
        size_t bytes = (size_t)c->exec_slot_bytes;
        for (int j = 0; j < x->ctx.n_models; j++) {
            const int i = x->ctx.models[j];
            dim = MM_MAX(dim, mm_encoder_info(mm_embed_model_encoder(g->embed, i))->dim);
            /* a slot holds at least one whole input of each model (a Qwen2-VL image at max_image_tokens) */
            const size_t one = mm_embed_model_max_input_bytes(g->embed, i);
            if (one > bytes) {
                mm_log_warn("executor %s: executor.slot_bytes raised to %zu MiB for model '%s''s largest input",
                            x->ctx.device, (one + (1 << 20) - 1) >> 20, mm_embed_model_name(g->embed, i));
                bytes = one;
            }
        }
        if (!(x->ctx.q = mm_gq_create(c->exec_slots, bytes, dim)))
            return snprintf(err, errlen, "executor %s: cannot map its queue (%d slots of %zu bytes)", x->ctx.device,
                            c->exec_slots, bytes), -1;
        mm_exec_view_t *v = &g->exview[k];
        v->q = x->ctx.q;
        memcpy(v->device, x->ctx.device, sizeof v->device);   /* both char[16], NUL-terminated */
        v->n_models = x->ctx.n_models;
        for (int j = 0; j < x->ctx.n_models; j++) {
            const int i = x->ctx.models[j];
            v->models[j] = i;
            x->remote[i] = (mm_exec_remote_t){.q = x->ctx.q, .model = i, .conf = c,
                                              .dim = mm_encoder_info(mm_embed_model_encoder(g->embed, i))->dim};
            mm_embed_set_remote(g->embed, i, mm_executor_remote_encode, &x->remote[i]);
        }
    }
    return 0;
}

static void exec_teardown(gen_t *g)
{
    for (int k = 0; k < g->n_ex; k++) mm_gq_destroy(g->ex[k].ctx.q);
    g->n_ex = 0;
}

/* ---------------------------------------------------------------- generations */

static gen_t *gen_create(const mm_conf_t *c, int id, char *err, size_t errlen)
{
    gen_t *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->id = id;
    g->conf = *c;
    for (int i = 0; i < MM_MAX_WORKERS; i++) g->sock[i] = -1, g->child[i] = -1, g->standin[i] = -1;
    g->overflow_sock = g->overflow_slot = -1;
    if (mm_embed_load(&g->conf, &g->embed, err, errlen) != MM_OK) {
        free(g);
        return NULL;
    }
    if (exec_setup(g, err, errlen) < 0) {
        exec_teardown(g);
        mm_embed_free(g->embed);
        free(g);
        return NULL;
    }
    for (int i = 0; i < c->workers; i++) {
        char addr[MM_PATH_MAX];
        int is_unix = mm_conf_worker_addr(c, i, addr, sizeof addr);
        g->sock[i] = get_socket(c, addr, is_unix);
        if (g->sock[i] < 0) {
            snprintf(err, errlen, "cannot listen on %.200s", addr);
            for (int j = 0; j < i; j++) put_socket(g->sock[j]);
            exec_teardown(g);
            mm_embed_free(g->embed);
            free(g);
            return NULL;
        }
    }
    char oaddr[MM_PATH_MAX];
    int ounix = mm_conf_overflow_addr(c, oaddr, sizeof oaddr);
    if (ounix >= 0 && (g->overflow_sock = get_socket(c, oaddr, ounix)) < 0) {
        snprintf(err, errlen, "cannot listen on %.200s (overflow_listen)", oaddr);
        for (int j = 0; j < c->workers; j++) put_socket(g->sock[j]);
        exec_teardown(g);
        mm_embed_free(g->embed);
        free(g);
        return NULL;
    }
    g->next = gens;
    gens = g;
    return g;
}

static void gen_free_if_done(gen_t *g)
{
    if (!g->retired || g->live > 0) return;
    /* its workers are gone: now its executors may stop */
    int running = 0;
    for (int k = 0; k < g->n_ex; k++)
        if (g->ex[k].pid > 0) {
            running++;
            if (!g->ex[k].stop_sent) kill(g->ex[k].pid, SIGTERM);
            g->ex[k].stop_sent = 1;
        }
    if (running) return;
    for (gen_t **pp = &gens; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    for (int i = 0; i < g->conf.workers; i++) put_socket(g->sock[i]);
    put_socket(g->overflow_sock);
    exec_teardown(g);
    mm_embed_free(g->embed);
    mm_log_info("generation %d retired", g->id);
    free(g);
}

/* ---------------------------------------------------------------- children */

static int drop_privileges(const mm_conf_t *c)
{
    if (geteuid() != 0 || (!c->user[0] && !c->group[0])) return 0;
    uid_t uid;
    gid_t gid;
    if (ids_for(c, &uid, &gid) < 0) return -1;
    if (gid != (gid_t)-1 && (setgroups(0, NULL) < 0 || setgid(gid) < 0)) return -1;
    if (uid != (uid_t)-1 && setuid(uid) < 0) return -1;
    return 0;
}

static int spawn(gen_t *g, int index, int standin)
{
    int slot = -1;
    for (int i = 0; i < MM_SB_SLOTS; i++)
        if (sb->slots[i].state == MM_SLOT_FREE && children[i].pid == 0) { slot = i; break; }
    if (slot < 0) {
        mm_log_error("scoreboard full; cannot start worker %d", index);
        return -1;
    }
    int si = index < 0 ? g->overflow_sock : g->sock[index];
    sock_t *s = &socks[si];
    if (s->fd < 0 && open_socket(&g->conf, s) < 0) return -1;
    mm_sb_slot_t *ss = &sb->slots[slot];
    memset(ss, 0, sizeof *ss);
    ss->index = index;
    ss->generation = g->id;
    ss->started_us = mm_wall_us();
    __atomic_store_n(&ss->state, MM_SLOT_STARTING, __ATOMIC_RELEASE);
    pid_t pid = fork();
    if (pid < 0) {
        mm_log_error("fork: %s", strerror(errno));
        ss->state = MM_SLOT_FREE;
        return -1;
    }
    if (pid == 0) {
        /* child: keep only its own socket */
        for (int i = 0; i < n_socks; i++)
            if (socks[i].fd >= 0 && i != si) close(socks[i].fd);
        close(sig_pipe[0]);
        close(sig_pipe[1]);
        if (drop_privileges(&g->conf) < 0) {
            mm_log_error("cannot switch to user '%s' group '%s': %s", g->conf.user, g->conf.group, strerror(errno));
            _exit(73);
        }
        static mm_worker_ctx_t ctx;
        ctx.conf = &g->conf;
        ctx.sb = sb;
        ctx.slot = ss;
        ctx.embed = g->embed;
        ctx.listen_fd = s->fd;
        ctx.index = index;
        ctx.exec = g->exview;
        ctx.n_exec = g->n_ex;
        if (standin) mm_worker_standin(&ctx);
        mm_worker_main(&ctx);
    }
    ss->pid = pid;
    children[slot] = (child_t){.pid = pid, .gen = g, .index = index, .started = mm_now_us(), .standin = standin};
    g->live++;
    if (standin) {
        if (index < 0) g->overflow_slot = slot;
        else g->standin[index] = slot;
        return 0;
    }
    g->child[index] = slot;
    g->restart_at[index] = 0;
    if (g->standin[index] >= 0) {   /* the real worker takes over the socket */
        kill(children[g->standin[index]].pid, SIGQUIT);
        children[g->standin[index]].stop_sent = 1;
        g->standin[index] = -1;
    }
    mm_log_debug("started worker %d (generation %d) pid %d", index, g->id, (int)pid);
    return 0;
}

static int spawn_exec(gen_t *g, int k)
{
    exec_t *x = &g->ex[k];
    mm_gq_exec_starting(x->ctx.q, 0);   /* before the fork: the child reads its generation */
    pid_t pid = fork();
    if (pid < 0) {
        mm_log_error("fork: %s", strerror(errno));
        mm_gq_exec_died(x->ctx.q);
        return -1;
    }
    if (pid == 0) {
        for (int i = 0; i < n_socks; i++)
            if (socks[i].fd >= 0) close(socks[i].fd);
        close(sig_pipe[0]);
        close(sig_pipe[1]);
        if (drop_privileges(&g->conf) < 0) {
            mm_log_error("cannot switch to user '%s' group '%s': %s", g->conf.user, g->conf.group, strerror(errno));
            _exit(73);
        }
        mm_executor_main(&x->ctx);
    }
    mm_gq_hdr(x->ctx.q)->exec_pid = pid;
    x->pid = pid;
    x->started = mm_now_us();
    x->restart_at = 0;
    x->stop_sent = x->hung = 0;
    mm_log_info("started executor %s (generation %d) pid %d", x->ctx.device, g->id, (int)pid);
    return 0;
}

static int live_execs(void)
{
    int n = 0;
    for (gen_t *g = gens; g; g = g->next)
        for (int k = 0; k < g->n_ex; k++) n += g->ex[k].pid > 0;
    return n;
}

static void signal_execs(int sig)
{
    for (gen_t *g = gens; g; g = g->next)
        for (int k = 0; k < g->n_ex; k++)
            if (g->ex[k].pid > 0) {
                kill(g->ex[k].pid, sig);
                g->ex[k].stop_sent = 1;
            }
}

/* An executor died: whatever it held fails (503), it restarts with the
 * workers' back-off. Returns 1 when pid was an executor. */
static int reap_exec(pid_t pid, int status)
{
    for (gen_t *g = gens; g; g = g->next)
        for (int k = 0; k < g->n_ex; k++) {
            exec_t *x = &g->ex[k];
            if (x->pid != pid) continue;
            x->pid = 0;
            const mm_gq_hdr_t *h = mm_gq_hdr(x->ctx.q);
            const int was_up = h->exec_state == MM_GQ_UP;
            int failed = mm_gq_exec_died(x->ctx.q);
            const int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            if (!(clean && (x->stop_sent || mstate == STOPPING))) {
                if (WIFSIGNALED(status))
                    mm_log_error("executor %s pid %d died from signal %d (%s)%s; %d request(s) in flight answered 503",
                                 x->ctx.device, (int)pid, WTERMSIG(status), strsignal(WTERMSIG(status)),
                                 x->hung ? " after its heartbeat stopped" : "", failed);
                else
                    mm_log_error("executor %s pid %d exited with status %d%s%s; %d request(s) in flight answered 503",
                                 x->ctx.device, (int)pid, WEXITSTATUS(status), h->error[0] ? ": " : "", h->error,
                                 failed);
            }
            if (mstate == RUNNING && g == cur && !x->stop_sent) {
                int64_t now = mm_now_us();
                if (now - x->started > QUICK_DEATH_US && was_up) x->fails = 0;
                x->fails++;
                double delay = 0;
                if (x->fails >= 2) {
                    delay = BACKOFF_FIRST * pow(2, x->fails - 2);
                    if (delay > g->conf.backoff_max) delay = g->conf.backoff_max;
                    mm_log_warn("executor %s is crash-looping (%d quick deaths): restart in %.1fs", x->ctx.device,
                                x->fails, delay);
                }
                x->restart_at = now + (int64_t)(delay * 1e6) + 1;
            }
            gen_free_if_done(g);
            return 1;
        }
    return 0;
}

/* An executor whose loop stopped turning (SIGSTOP, a wedged driver) for
 * longer than a batch may take is killed and restarted: its workers'
 * requests would otherwise wait for their deadlines. */
static void check_execs(void)
{
    int64_t now = mm_now_us();
    for (gen_t *g = gens; g; g = g->next)
        for (int k = 0; k < g->n_ex; k++) {
            exec_t *x = &g->ex[k];
            const mm_gq_hdr_t *h = mm_gq_hdr(x->ctx.q);
            if (x->pid <= 0 || x->hung || h->exec_state != MM_GQ_UP || !h->heartbeat_us) continue;
            double silent = (now - h->heartbeat_us) / 1e6;
            if (silent <= g->conf.heartbeat_timeout + g->conf.request_timeout) continue;
            mm_log_error("executor %s pid %d: no heartbeat for %.1fs (stopped or wedged); killing it", x->ctx.device,
                         (int)x->pid, silent);
            kill(x->pid, SIGKILL);
            x->hung = 1;
        }
    if (mstate != RUNNING) return;
    for (int k = 0; k < cur->n_ex; k++)
        if (cur->ex[k].restart_at && now >= cur->ex[k].restart_at && cur->ex[k].pid == 0) {
            if (spawn_exec(cur, k) < 0) cur->ex[k].restart_at = now + 1000000;
        }
}

static void signal_gen(gen_t *g, int sig)
{
    for (int i = 0; i < MM_SB_SLOTS; i++)
        if (children[i].pid > 0 && children[i].gen == g) {
            kill(children[i].pid, sig);
            children[i].stop_sent = 1;
        }
}

static void signal_all(int sig)
{
    for (int i = 0; i < MM_SB_SLOTS; i++)
        if (children[i].pid > 0) kill(children[i].pid, sig);
}

static int live_children(void)
{
    int n = 0;
    for (int i = 0; i < MM_SB_SLOTS; i++) n += children[i].pid > 0;
    return n;
}

static void schedule_restart(gen_t *g, int index, int crashed, int64_t lived)
{
    int64_t now = mm_now_us();
    if (!crashed || lived > QUICK_DEATH_US) g->fails[index] = 0;
    if (crashed) g->fails[index]++;
    double delay = 0;
    if (g->fails[index] >= 2) {
        delay = BACKOFF_FIRST * pow(2, g->fails[index] - 2);
        if (delay > g->conf.backoff_max) delay = g->conf.backoff_max;
        sb->backoffs++;
        mm_log_warn("worker %d is crash-looping (%d quick deaths): restart in %.1fs", index, g->fails[index], delay);
        if (g->standin[index] < 0) spawn(g, index, 1);
    }
    g->restart_at[index] = now + (int64_t)(delay * 1e6) + 1;
}

/* A worker that died from a fault while running a request: make sure that
 * request is marked (the worker's own fault handler normally did it before
 * dying; this covers faults it could not handle) and log the incident. */
static void mark_crash(const mm_sb_slot_t *s, const child_t *ch, int status)
{
    if (ch->standin || ch->timed_out || ch->wedged || !s->req_start_us) return;
    int sig = WIFSIGNALED(status) ? WTERMSIG(status)
              : WIFEXITED(status) && WEXITSTATUS(status) == MM_SANDBOX_EXIT ? SIGSYS : 0;
    if (!sig) return;
    if (sig == SIGKILL || sig == SIGTERM || sig == SIGQUIT || sig == SIGINT || sig == SIGHUP) return;   /* from outside */
    char fp[MM_SB_FP], uri[64];
    memcpy(fp, s->req_fp, sizeof fp);
    memcpy(uri, s->req_uri, sizeof uri);
    fp[MM_SB_FP - 1] = uri[63] = '\0';
    mm_sb_poison_mark_running(sb, s, sig);
    if (s->batch_n > 1)
        mm_log_error("worker %d pid %d crashed (signal %d) running a batch of %d requests (first %s, attempt %s): "
                     "each retry runs alone", ch->index, (int)ch->pid, sig, (int)s->batch_n, uri, fp[0] ? fp : "-");
    else
        mm_log_error("worker %d pid %d crashed (signal %d) running request %s (attempt %s): it is not retried on "
                     "another worker", ch->index, (int)ch->pid, sig, uri, fp[0] ? fp : "-");
}

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (reap_exec(pid, status)) continue;
        for (gen_t *gg = gens; gg; gg = gg->next)   /* what the dead worker held in executor queues */
            for (int k = 0; k < gg->n_ex; k++) mm_gq_owner_died(gg->ex[k].ctx.q, (int)pid);
        int slot = -1;
        for (int i = 0; i < MM_SB_SLOTS; i++)
            if (children[i].pid == pid) { slot = i; break; }
        if (slot < 0) continue;
        child_t ch = children[slot];
        memset(&children[slot], 0, sizeof children[slot]);
        mark_crash(&sb->slots[slot], &ch, status);
        mm_sb_retire(sb, &sb->slots[slot]);
        gen_t *g = ch.gen;
        g->live--;
        if (ch.standin) {
            if (ch.index < 0) {
                g->overflow_slot = -1;
                if (mstate == RUNNING && g == cur && !ch.stop_sent) {
                    mm_log_warn("overflow process pid %d died; restarting it", (int)pid);
                    spawn(g, -1, 1);
                }
            } else if (g->standin[ch.index] == slot) {
                g->standin[ch.index] = -1;
                /* a slot still waiting out its back-off must not become a
                 * socket nobody accepts on: replace its stand-in at once */
                if (mstate == RUNNING && g == cur && !ch.stop_sent && g->restart_at[ch.index] &&
                    g->child[ch.index] < 0) {
                    mm_log_warn("stand-in of worker %d pid %d died; replacing it", ch.index, (int)pid);
                    spawn(g, ch.index, 1);
                }
            }
            gen_free_if_done(g);
            continue;
        }
        if (g->child[ch.index] == slot) g->child[ch.index] = -1;
        int64_t lived = mm_now_us() - ch.started;
        int crashed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (ch.timed_out) {
            mm_log_warn("worker %d pid %d killed after request_timeout (%.1fs)", ch.index, (int)pid, g->conf.request_timeout);
        } else if (ch.wedged) {
            mm_log_warn("worker %d pid %d replaced: it stopped answering (no heartbeat)", ch.index, (int)pid);
        } else if (WIFSIGNALED(status)) {
            mm_log_error("worker %d pid %d died from signal %d (%s)", ch.index, (int)pid, WTERMSIG(status),
                         strsignal(WTERMSIG(status)));
        } else if (crashed) {
            mm_log_error("worker %d pid %d exited with status %d", ch.index, (int)pid, WEXITSTATUS(status));
        }
        if (mstate == RUNNING && g == cur && !ch.stop_sent) {
            if (ch.timed_out) crashed = 0, sb->timeouts++;
            else if (ch.wedged) crashed = 0, sb->wedged++;
            else if (crashed) sb->crashes++;
            else {
                sb->recycles++;
                mm_log_info("worker %d pid %d recycled after max_requests", ch.index, (int)pid);
            }
            schedule_restart(g, ch.index, crashed, lived);
        }
        gen_free_if_done(g);
    }
}

/* Replace workers whose accept loop stopped refreshing its heartbeat
 * (SIGSTOP, a wedged process): requests routed to them would otherwise wait
 * for nginx's read timeout. */
static void check_heartbeats(void)
{
    int64_t now = mm_now_us();
    for (int i = 0; i < MM_SB_SLOTS; i++) {
        child_t *ch = &children[i];
        if (ch->pid <= 0 || ch->timed_out || ch->wedged || ch->stop_sent) continue;
        int st = sb->slots[i].state;
        int64_t hb = sb->slots[i].heartbeat_us;
        if ((st != MM_SLOT_IDLE && st != MM_SLOT_BUSY && st != MM_SLOT_BACKOFF) || !hb) continue;
        double silent = (now - hb) / 1e6;
        if (silent <= ch->gen->conf.heartbeat_timeout) continue;
        mm_log_error("%s %d pid %d: no heartbeat for %.1fs (stopped or wedged); killing it", ch->standin ? "stand-in" : "worker",
                     ch->index, (int)ch->pid, silent);
        kill(ch->pid, SIGKILL);
        ch->wedged = 1;
    }
}

static void check_timeouts(void)
{
    int64_t now = mm_now_us();
    for (int i = 0; i < MM_SB_SLOTS; i++) {
        child_t *ch = &children[i];
        if (ch->pid <= 0 || ch->timed_out) continue;
        int64_t st = sb->slots[i].req_start_us;
        if (st && now - st > (int64_t)(ch->gen->conf.request_timeout * 1e6)) {
            char uri[64];
            memcpy(uri, sb->slots[i].req_uri, sizeof uri);
            uri[63] = '\0';
            char fp[MM_SB_FP];
            memcpy(fp, sb->slots[i].req_fp, sizeof fp);
            fp[MM_SB_FP - 1] = '\0';
            /* marked before the kill: nginx's retry, which follows the
             * closed connection, must already find the mark. A batch's
             * members are only suspects: each retry runs alone, and the
             * one that is slow by itself times out again and is refused. */
            int bn = sb->slots[i].batch_n;
            mm_sb_poison_mark_running(sb, &sb->slots[i], MM_POISON_TIMEOUT);
            if (bn > 1)
                mm_log_error("worker %d pid %d: a batch of %d requests (first %s, attempt %s) ran past request_timeout "
                             "%.1fs; killing it; each retry runs alone", ch->index, (int)ch->pid, bn, uri,
                             fp[0] ? fp : "-", ch->gen->conf.request_timeout);
            else
                mm_log_error("worker %d pid %d: request %s (attempt %s) ran past request_timeout %.1fs; killing it; "
                             "it is not retried on another worker", ch->index, (int)ch->pid, uri, fp[0] ? fp : "-",
                             ch->gen->conf.request_timeout);
            kill(ch->pid, SIGKILL);
            ch->timed_out = 1;
        }
    }
}

static void run_restarts(void)
{
    if (mstate != RUNNING) return;
    int64_t now = mm_now_us();
    int waiting = 0;
    for (int i = 0; i < cur->conf.workers; i++) {
        if (!cur->restart_at[i]) continue;
        if (now >= cur->restart_at[i]) {
            if (spawn(cur, i, 0) == 0) sb->restarts++;
            else cur->restart_at[i] = now + 1000000;
        }
        if (cur->restart_at[i]) waiting++;
    }
    sb->in_backoff = waiting;
}

/* ---------------------------------------------------------------- reload / stop */

/* tools/run.sh (`make run`) starts the master with MMEMBED_RELOAD_NOTIFY set
 * to its own pid and follows every reload with nginx: SIGUSR2 once the new
 * generation exists (its sockets listen, so nginx may point at them),
 * SIGUSR1 when a reload failed and the running configuration stays. Only
 * the parent that asked is told (a daemonized master, or a stale variable,
 * signals nobody). */
static void notify_reload(int ok)
{
    const char *v = getenv("MMEMBED_RELOAD_NOTIFY");
    if (!v || !*v) return;
    char *end;
    long pid = strtol(v, &end, 10);
    if (*end || pid <= 1 || (pid_t)pid != getppid()) return;
    kill((pid_t)pid, ok ? SIGUSR2 : SIGUSR1);
}

static void reload(void)
{
    mm_conf_t *c = malloc(sizeof *c);
    char err[MM_ERRLEN * 2];
    if (!c) {
        notify_reload(0);
        return;
    }
    mm_log_info("reloading %s", conf_path);
    if (mm_conf_load(conf_path, c, err, sizeof err) != MM_OK) {
        mm_log_error("reload failed, keeping the running configuration: %s", err);
        free(c);
        notify_reload(0);
        return;
    }
    gen_t *g = gen_create(c, cur->id + 1, err, sizeof err);
    free(c);
    if (!g) {
        mm_log_error("reload failed, keeping the running configuration: %s", err);
        notify_reload(0);
        return;
    }
    mm_log_open(g->conf.log_file, g->conf.log_level);
    /* models may have changed: nothing cached under the old config is served
     * again (the generation is also part of every key) */
    mm_cache_clear(cache);
    mm_embed_set_cache(g->embed, cache, g->id);
    gen_t *old = cur;
    cur = g;
    sb->generation = g->id;
    sb->workers = g->conf.workers;
    for (int k = 0; k < g->n_ex; k++) spawn_exec(g, k);
    for (int i = 0; i < g->conf.workers; i++) spawn(g, i, 0);
    if (g->overflow_sock >= 0) spawn(g, -1, 1);
    old->retired = 1;
    for (int k = 0; k < old->n_ex; k++) old->ex[k].restart_at = 0;
    for (int i = 0; i < MM_MAX_WORKERS; i++) old->restart_at[i] = 0;
    signal_gen(old, SIGQUIT);   /* finish in-flight requests, then exit */
    gen_free_if_done(old);
    mm_log_info("reloaded: generation %d with %d workers", g->id, g->conf.workers);
    notify_reload(1);
}

static void begin_stop(int fast)
{
    if (mstate == STOPPING && !(fast && !fast_stop)) return;
    mstate = STOPPING;
    fast_stop = fast;
    mm_log_info("%s stop", fast ? "fast" : "graceful");
    sb->ready = 0;
    if (fast) {
        signal_all(SIGTERM);
        signal_execs(SIGTERM);
        stop_deadline = mm_now_us() + 1000000;
    } else {
        for (int i = 0; i < MM_SB_SLOTS; i++)
            if (children[i].pid > 0) children[i].stop_sent = 1;
        signal_all(SIGQUIT);
        stop_deadline = mm_now_us() + (int64_t)(cur->conf.stop_timeout * 1e6);
    }
}

static void handle_signals(void)
{
    char buf[64];
    ssize_t n;
    while ((n = read(sig_pipe[0], buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            switch (buf[i]) {
            case SIGHUP:
                if (mstate == RUNNING) reload();
                else notify_reload(0);   /* stopping: nothing is reloaded */
                break;
            case SIGTERM:
            case SIGQUIT: begin_stop(0); break;
            case SIGINT: begin_stop(1); break;
            case SIGUSR1:
                mm_log_reopen();
                signal_all(SIGUSR1);
                mm_log_info("log reopened");
                break;
            case SIGCHLD: break;
            }
        }
    }
}

/* ---------------------------------------------------------------- main */

static int write_pid_file(const char *path)
{
    if (!path[0]) return 0;
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    return 0;
}

int mm_master_run(const char *path, int daemonize)
{
    static mm_conf_t conf;
    char err[MM_ERRLEN * 2];
    conf_path = path;
    if (mm_conf_load(path, &conf, err, sizeof err) != MM_OK) {
        fprintf(stderr, "mmembed: %s\n", err);
        return 1;
    }
    if (mm_log_open(conf.log_file, conf.log_level) != MM_OK) {
        fprintf(stderr, "mmembed: cannot open log file %s: %s\n", conf.log_file, strerror(errno));
        return 1;
    }
    mm_log_set_role("master");
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    int sigs[] = {SIGHUP, SIGTERM, SIGQUIT, SIGINT, SIGUSR1, SIGCHLD};
    for (size_t i = 0; i < MM_ARRAY_LEN(sigs); i++) sigaction(sigs[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    sb = mm_sb_create();
    if (!sb) {
        mm_log_error("cannot map the scoreboard");
        return 1;
    }
    sb->start_us = mm_wall_us();
    int64_t t0 = mm_now_us();
    cur = gen_create(&conf, 1, err, sizeof err);
    if (!cur) {
        mm_log_error("startup failed: %s", err);
        if (conf.pid_file[0]) unlink(conf.pid_file);
        return 1;
    }
    /* detach only once models and sockets are ready, so `serve -d` exits
     * non-zero when startup fails */
    if (daemonize) {
        pid_t p = fork();
        if (p < 0) return 1;
        if (p > 0) _exit(0);
        setsid();
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            if (conf.log_file[0] && strcmp(conf.log_file, "-") != 0) dup2(nul, 2);
            if (nul > 2) close(nul);
        }
    }
    if (write_pid_file(conf.pid_file) < 0) {
        mm_log_error("cannot write pid file %s: %s", conf.pid_file, strerror(errno));
        if (conf.pid_file[0]) unlink(conf.pid_file);
        return 1;
    }
    if (conf.cache_mb > 0) {
        if (mm_cache_create(&cache, (size_t)conf.cache_mb << 20, mm_embed_max_dim(cur->embed), err, sizeof err))
            mm_log_warn("embedding cache disabled: %s", err);
        else
            mm_log_info("embedding cache: %d MiB shared by all workers", conf.cache_mb);
    }
    mm_embed_set_cache(cur->embed, cache, cur->id);
    sb->generation = 1;
    sb->workers = conf.workers;
    for (int k = 0; k < cur->n_ex; k++) spawn_exec(cur, k);
    for (int i = 0; i < conf.workers; i++) spawn(cur, i, 0);
    if (cur->overflow_sock >= 0) spawn(cur, -1, 1);
    sb->ready = 1;
    {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        if (cores > 0 && (long)conf.workers * conf.threads > cores)
            mm_log_warn("%d workers x %d threads exceed the %ld cores: they will compete for them", conf.workers,
                        conf.threads, cores);
    }
    mm_log_info("mmembed %s: %d workers on %s, %zu bytes of shared weights, ready in %.0f ms", MM_VERSION,
                conf.workers, conf.listen, mm_embed_weight_bytes(cur->embed), (mm_now_us() - t0) / 1e3);

    struct pollfd pfd = {.fd = sig_pipe[0], .events = POLLIN};
    for (;;) {
        poll(&pfd, 1, 50);
        handle_signals();
        reap();
        if (mstate == STOPPING) {
            /* executors stop once no worker may still need them */
            if (live_children() == 0 && live_execs() > 0) {
                for (gen_t *g = gens; g; g = g->next)
                    for (int k = 0; k < g->n_ex; k++)
                        if (g->ex[k].pid > 0 && !g->ex[k].stop_sent) {
                            kill(g->ex[k].pid, SIGTERM);
                            g->ex[k].stop_sent = 1;
                        }
            }
            if (live_children() == 0 && live_execs() == 0) break;
            if (mm_now_us() > stop_deadline) {
                mm_log_warn("stop timeout: killing %d workers and %d executors", live_children(), live_execs());
                signal_all(SIGKILL);
                signal_execs(SIGKILL);
                stop_deadline = mm_now_us() + 5000000;
            }
            continue;
        }
        check_timeouts();
        check_heartbeats();
        check_execs();
        run_restarts();
    }
    for (int i = 0; i < n_socks; i++)
        if (socks[i].refs > 0) close_socket(&socks[i]);
    if (cur->conf.pid_file[0]) unlink(cur->conf.pid_file);
    mm_log_info("stopped");
    return 0;
}
