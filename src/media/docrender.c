/* The document renderer broker and its sandboxed children (see
 * include/mmembed/document.h for the design).
 *
 * Why a broker per worker, forked before the worker's sandbox: workers may
 * not fork or execve (src/serve/sandbox.c), and a renderer must be a
 * fresh process per request. A broker forked by the master and shared by
 * all workers would put every worker's documents behind one queue, make
 * one process the target of every worker, and need the master (which the
 * lead restructures) to route sockets to workers across reloads. A broker
 * per worker has the worker's lifetime: it dies with it
 * (PR_SET_PDEATHSIG), a replaced worker gets a new one, and a broker
 * never holds more than one job, so there is no queue. The broker itself
 * parses nothing from the PDF: it copies bytes into a memfd, starts a
 * program from a fixed table with numeric arguments, forwards its output
 * and enforces the deadline.
 *
 * Wire format (host endianness; both ends are one binary):
 *   worker → broker: wire_job_t, then pdf_len bytes
 *   broker → worker: frames { u32 type, u32 len } + len bytes:
 *     F_OUT (stdout bytes), F_ERR (the start of stderr), F_END (wire_end_t) */
#include "mmembed/document.h"
#include "mmembed/common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include "mmembed/seccomp.h"
#include <linux/seccomp.h>
#endif

#define JOB_MAGIC 0x4d4d5044u   /* "MMPD" */
enum { F_OUT = 1, F_ERR = 2, F_END = 3 };
enum { CHUNK = 64 << 10 };

typedef struct {
    uint32_t magic;
    int32_t tool, first, last, scale_to;
    double seconds;
    int64_t memory, max_out;
    uint64_t pdf_len;
} wire_job_t;

typedef struct {
    int32_t end, code;
} wire_end_t;

static const char *const tool_names[] = {[MM_DOC_TOOL_INFO] = "pdfinfo", [MM_DOC_TOOL_PPM] = "pdftoppm",
                                         [MM_DOC_TOOL_TEXT] = "pdftotext"};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---------------------------------------------------------------- blocking I/O (broker side) */

static int read_full(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t k = read(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

static int write_full(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

static int send_frame(int fd, uint32_t type, const void *p, uint32_t len)
{
    uint32_t h[2] = {type, len};
    if (write_full(fd, h, sizeof h) < 0) return -1;
    return len ? write_full(fd, p, len) : 0;
}

/* ---------------------------------------------------------------- the renderer's own filter */

#if defined(__x86_64__)
#define RET_ERRNO(e) BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))
#define RET_ALLOW BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
#define ARG_LO(i) offsetof(struct seccomp_data, args[i])
#define ARG_HI(i) (offsetof(struct seccomp_data, args[i]) + 4)

/* Calls a renderer has no business making: the network, other processes,
 * kernel objects, and everything that creates, changes or removes a file.
 * They fail with EACCES (the program reports an error and exits) rather
 * than killing, so a font cache write attempt is harmless. */
static const int denied[] = {
    SYS_socket, SYS_socketpair, SYS_connect, SYS_bind, SYS_listen, SYS_accept, SYS_accept4, SYS_sendto,
    SYS_sendmsg, SYS_recvmsg, SYS_recvfrom,
    SYS_fork, SYS_vfork, SYS_execveat, SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kill,
    SYS_tkill, SYS_mount, SYS_umount2, SYS_pivot_root, SYS_chroot, SYS_unshare, SYS_setns, SYS_keyctl,
    SYS_add_key, SYS_request_key, SYS_bpf, SYS_perf_event_open, SYS_userfaultfd, SYS_io_uring_setup,
    SYS_creat, SYS_mkdir, SYS_mkdirat, SYS_rmdir, SYS_unlink, SYS_unlinkat, SYS_rename, SYS_renameat,
    SYS_renameat2, SYS_link, SYS_linkat, SYS_symlink, SYS_symlinkat, SYS_truncate, SYS_ftruncate, SYS_chmod,
    SYS_fchmod, SYS_fchmodat, SYS_chown, SYS_fchown, SYS_lchown, SYS_fchownat, SYS_mknod, SYS_mknodat,
    SYS_utimes, SYS_utimensat, SYS_futimesat, SYS_setxattr, SYS_lsetxattr, SYS_fsetxattr, SYS_removexattr,
    SYS_lremovexattr, SYS_fremovexattr, SYS_setuid, SYS_setgid, SYS_setreuid, SYS_setregid, SYS_setresuid,
    SYS_setresgid, SYS_setgroups, SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_kexec_load,
    SYS_reboot, SYS_swapon, SYS_swapoff, SYS_acct, SYS_quotactl, SYS_name_to_handle_at, SYS_open_by_handle_at,
};

/* execve is allowed once: for the pointer `path` of this process (the
 * exec below); the new program's address space would need that exact
 * value, so a second exec is refused. */
static int build_filter(mm_seccomp_prog_t *p, const char *path)
{
    const unsigned wflags = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;
    uint64_t pv = (uint64_t)(uintptr_t)path;
    mm_seccomp_begin(p);
    mm_seccomp_ret_on(p, denied, MM_ARRAY_LEN(denied), SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA));
    /* clone3: flags in memory → ENOSYS, glibc falls back to clone */
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1));
    mm_seccomp_emit(p, (struct sock_filter)RET_ERRNO(ENOSYS));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1));
    mm_seccomp_emit(p, (struct sock_filter)RET_ERRNO(ENOSYS));
    /* clone: threads only (no process) */
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(0)));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1));
    mm_seccomp_emit(p, (struct sock_filter)RET_ALLOW);
    mm_seccomp_emit(p, (struct sock_filter)RET_ERRNO(EACCES));
    /* open / openat: read-only */
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_open, 0, 4));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1)));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, wflags, 0, 1));
    mm_seccomp_emit(p, (struct sock_filter)RET_ERRNO(EACCES));
    mm_seccomp_emit(p, (struct sock_filter)RET_ALLOW);
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 0, 4));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(2)));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, wflags, 0, 1));
    mm_seccomp_emit(p, (struct sock_filter)RET_ERRNO(EACCES));
    mm_seccomp_emit(p, (struct sock_filter)RET_ALLOW);
    /* execve: only ours */
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_execve, 0, 5));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(0)));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)pv, 0, 2));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_HI(0)));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)(pv >> 32), 1, 0));
    mm_seccomp_emit(p, (struct sock_filter)RET_ERRNO(EACCES));
    mm_seccomp_emit(p, (struct sock_filter)RET_ALLOW);
    return p->n <= MM_SECCOMP_MAX_INSNS ? 0 : -1;
}

static int enter_filter(const char *path)
{
    static mm_seccomp_prog_t p;   /* static: the child's stack is small enough either way; keeps it off it */
    if (build_filter(&p, path) < 0) return -1;
    return (int)mm_seccomp_load(&p, 0);
}
#else
static int enter_filter(const char *path)
{
    (void)path;
    return -1;   /* no filter on other architectures: refuse to run */
}
#endif

/* ---------------------------------------------------------------- one run (broker side) */

static void set_limit(int res, rlim_t v)
{
    struct rlimit rl = {v, v};
    setrlimit(res, &rl);
}

/* In the forked child: from the broker's process to the program, behind
 * every fence we can put up without privileges. Only async-signal-safe
 * calls (the broker is single-threaded, but keep to the rule). */
static void exec_child(const char *path, char *const argv[], int pdf_fd, int out_w, int err_w,
                       const wire_job_t *job, int netns, pid_t broker)
{
    setsid();   /* own process group: the deadline kills the whole group */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != broker) _exit(126);
    if (dup2(pdf_fd, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0) _exit(126);
    syscall(SYS_close_range, 3u, ~0u, 0u);
    if (chdir("/") < 0) _exit(126);
    if (netns && unshare(CLONE_NEWNET) < 0 && unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0) _exit(126);
    double cpu = job->seconds + 1;
    set_limit(RLIMIT_CPU, (rlim_t)cpu);
    set_limit(RLIMIT_AS, (rlim_t)job->memory);
    set_limit(RLIMIT_FSIZE, 0);
    set_limit(RLIMIT_CORE, 0);
    set_limit(RLIMIT_NOFILE, 64);
    set_limit(RLIMIT_MEMLOCK, 0);
    set_limit(RLIMIT_MSGQUEUE, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) _exit(126);
    if (enter_filter(path) != 0) _exit(126);
    char *const envp[] = {NULL};
    execve(path, argv, envp);
    static const char msg[] = "document renderer: execve failed\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(127);
}

static void kill_group(pid_t pid)
{
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
}

/* Run the job's program on pdf_fd, forward its output to sock. Returns -1
 * when sock is gone (the broker exits). */
static int run_job(int sock, const wire_job_t *job, int pdf_fd, const char *tools_dir, int netns)
{
    char path[PATH_MAX], a_first[16], a_last[16], a_scale[16];
    int pl = snprintf(path, sizeof path, "%s/%s", tools_dir, tool_names[job->tool]);
    if (pl < 0 || (size_t)pl >= sizeof path) path[0] = '\0';   /* never run a cut path: exec fails, the job errs */
    snprintf(a_first, sizeof a_first, "%d", job->first);
    snprintf(a_last, sizeof a_last, "%d", job->last);
    snprintf(a_scale, sizeof a_scale, "%d", job->scale_to);
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)tool_names[job->tool];
    argv[n++] = "-f", argv[n++] = a_first, argv[n++] = "-l", argv[n++] = a_last;
    if (job->tool == MM_DOC_TOOL_PPM) argv[n++] = "-scale-to", argv[n++] = a_scale;
    if (job->tool == MM_DOC_TOOL_TEXT) argv[n++] = "-enc", argv[n++] = "UTF-8", argv[n++] = "-eol", argv[n++] = "unix";
    argv[n++] = "-";   /* the PDF on stdin */
    if (job->tool == MM_DOC_TOOL_TEXT) argv[n++] = "-";   /* the text on stdout */
    argv[n] = NULL;

    wire_end_t end = {MM_DOC_END_SPAWN, 0};
    char errtext[512];
    size_t errlen = 0;
    int out_p[2] = {-1, -1}, err_p[2] = {-1, -1};
    if (pipe2(out_p, O_CLOEXEC) < 0 || pipe2(err_p, O_CLOEXEC) < 0) goto reply;
    pid_t broker = getpid();
    pid_t pid = fork();
    if (pid < 0) goto reply;
    if (pid == 0) exec_child(path, argv, pdf_fd, out_p[1], err_p[1], job, netns, broker);
    close(out_p[1]);
    close(err_p[1]);
    out_p[1] = err_p[1] = -1;

    int64_t deadline = now_us() + (int64_t)(job->seconds * 1e6);
    int64_t total = 0;
    int open_out = 1, open_err = 1, status = 0, reaped = 0;
    end.end = MM_DOC_END_EXIT;
    static char chunk[CHUNK];
    while (open_out || open_err || !reaped) {
        int64_t left = deadline - now_us();
        if (left <= 0) {
            end.end = MM_DOC_END_TIMEOUT;
            break;
        }
        if (!open_out && !open_err) {
            /* both pipes closed: wait for the exit, still on the clock */
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid) {
                reaped = 1;
                break;
            }
            usleep(2000);
            continue;
        }
        struct pollfd pf[3] = {{.fd = open_out ? out_p[0] : -1, .events = POLLIN},
                               {.fd = open_err ? err_p[0] : -1, .events = POLLIN},
                               {.fd = sock, .events = 0}};
        int k = poll(pf, 3, (int)MM_MIN(left / 1000 + 1, 1000));
        if (k < 0 && errno != EINTR) break;
        if (pf[2].revents & (POLLHUP | POLLERR)) {   /* the worker is gone */
            kill_group(pid);
            waitpid(pid, NULL, 0);
            return -1;
        }
        if (open_out && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t r = read(out_p[0], chunk, sizeof chunk);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                open_out = 0;
            } else {
                total += r;
                if (total > job->max_out) {
                    end.end = MM_DOC_END_OUTPUT;
                    break;
                }
                if (send_frame(sock, F_OUT, chunk, (uint32_t)r) < 0) {
                    kill_group(pid);
                    waitpid(pid, NULL, 0);
                    return -1;
                }
            }
        }
        if (open_err && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            char tmp[4096];
            ssize_t r = read(err_p[0], tmp, sizeof tmp);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                open_err = 0;
            } else if (errlen < sizeof errtext) {
                size_t take = MM_MIN((size_t)r, sizeof errtext - errlen);
                memcpy(errtext + errlen, tmp, take);
                errlen += take;
            }
        }
    }
    if (!reaped) {
        kill_group(pid);
        waitpid(pid, &status, 0);
    }
    if (end.end == MM_DOC_END_EXIT) {
        if (WIFSIGNALED(status)) {
            end.end = MM_DOC_END_SIGNAL;
            end.code = WTERMSIG(status);
        } else {
            end.code = WEXITSTATUS(status);
            if (end.code == 126 || end.code == 127) end.end = MM_DOC_END_SPAWN;
        }
    }
reply:
    for (int i = 0; i < 2; i++) {
        if (out_p[i] >= 0) close(out_p[i]);
        if (err_p[i] >= 0) close(err_p[i]);
    }
    if (errlen && send_frame(sock, F_ERR, errtext, (uint32_t)errlen) < 0) return -1;
    return send_frame(sock, F_END, &end, sizeof end);
}

/* ---------------------------------------------------------------- the broker */

static int job_valid(const wire_job_t *j)
{
    return j->magic == JOB_MAGIC && j->tool >= MM_DOC_TOOL_INFO && j->tool <= MM_DOC_TOOL_TEXT && j->first >= 1 &&
           j->last >= j->first && j->scale_to >= 1 && j->scale_to <= 1 << 16 && j->seconds > 0 &&
           j->seconds <= 86400 && j->memory >= (16 << 20) && j->max_out > 0 && j->pdf_len <= ((uint64_t)1 << 32);
}

static void broker_main(int sock, const char *tools_dir, int netns)
{
    static char chunk[CHUNK];
    for (;;) {
        wire_job_t job;
        if (read_full(sock, &job, sizeof job) < 0 || !job_valid(&job)) _exit(0);
        /* the PDF goes into a sealed memfd: the program reads (and seeks)
         * it as stdin and cannot change it; nothing touches the disk */
        int mfd = (int)syscall(SYS_memfd_create, "mmembed-pdf", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        int ok = mfd >= 0;
        for (uint64_t left = job.pdf_len; left;) {
            size_t take = (size_t)MM_MIN(left, (uint64_t)sizeof chunk);
            if (read_full(sock, chunk, take) < 0) _exit(0);
            if (ok && write_full(mfd, chunk, take) < 0) ok = 0;
            left -= take;
        }
        if (ok && fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) ok = 0;
        if (ok && lseek(mfd, 0, SEEK_SET) < 0) ok = 0;
        int rc;
        if (ok) {
            rc = run_job(sock, &job, mfd, tools_dir, netns);
        } else {
            wire_end_t end = {MM_DOC_END_SPAWN, errno};
            rc = send_frame(sock, F_END, &end, sizeof end);
        }
        if (mfd >= 0) close(mfd);
        if (rc < 0) _exit(0);
    }
}

/* Can this process give a child a private network namespace? Tried once
 * in a throwaway child, so a kernel that refuses is known up front. */
static int probe_netns(void)
{
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) _exit(unshare(CLONE_NEWNET) == 0 || unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0 ? 0 : 1);
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int mm_doc_renderer_start(mm_doc_renderer_t *r, const char *tools_dir, char *err, size_t errlen)
{
    r->fd = -1;
    r->pid = -1;
    r->netns = 0;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", tools_dir && *tools_dir ? tools_dir : "/usr/bin");
    for (int t = MM_DOC_TOOL_INFO; t <= MM_DOC_TOOL_TEXT; t++) {
        char path[PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/%s", dir, tool_names[t]);
        if (access(path, X_OK) != 0)
            return mm_errf(err, errlen, MM_E_UNSUPPORTED, "%s not found (install poppler-utils): %s", path,
                           strerror(errno));
    }
#if !defined(__x86_64__)
    return mm_errf(err, errlen, MM_E_UNSUPPORTED, "the document renderer's filter exists for x86-64 only");
#endif
    int netns = probe_netns();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return mm_errf(err, errlen, MM_ERR, "socketpair: %s", strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        return mm_errf(err, errlen, MM_ERR, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(0);
        prctl(PR_SET_NAME, "mm-docrender");
        for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
        signal(SIGPIPE, SIG_IGN);
        signal(SIGINT, SIG_IGN);   /* a terminal's ^C reaches the worker; it decides */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (dup2(sv[1], 3) < 0) _exit(0);
        syscall(SYS_close_range, 4u, ~0u, 0u);
        broker_main(3, dir, netns);
        _exit(0);
    }
    close(sv[1]);
    int fl = fcntl(sv[0], F_GETFL);
    fcntl(sv[0], F_SETFL, fl | O_NONBLOCK);
    r->fd = sv[0];
    r->pid = pid;
    r->netns = netns;
    return MM_OK;
}

void mm_doc_renderer_stop(mm_doc_renderer_t *r)
{
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
    if (r->pid > 0) {
        int st;
        for (int i = 0; i < 200 && waitpid(r->pid, &st, WNOHANG) == 0; i++) usleep(5000);
        if (waitpid(r->pid, &st, WNOHANG) == 0) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &st, 0);
        }
    }
    r->pid = -1;
}

/* ---------------------------------------------------------------- the worker's side */

/* Non-blocking I/O with a deadline: only poll/read/write, which the
 * worker's sandbox allows. */
static int io_wait(int fd, short ev, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_us();
        if (left <= 0) return -1;
        struct pollfd pf = {.fd = fd, .events = ev};
        int k = poll(&pf, 1, (int)MM_MIN(left / 1000 + 1, 1000));
        if (k < 0 && errno != EINTR) return -1;
        if (k > 0) return 0;
    }
}

static int send_all(int fd, const void *p, size_t n, int64_t deadline)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k > 0) {
            c += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN && io_wait(fd, POLLOUT, deadline) == 0) continue;
        return -1;
    }
    return 0;
}

static int recv_all(int fd, void *p, size_t n, int64_t deadline)
{
    char *c = p;
    while (n) {
        ssize_t k = read(fd, c, n);
        if (k > 0) {
            c += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN && io_wait(fd, POLLIN, deadline) == 0) continue;
        return -1;
    }
    return 0;
}

static int broker_lost(mm_doc_renderer_t *r, char *err, size_t errlen, const char *what)
{
    if (r->fd >= 0) close(r->fd);   /* the broker sees the hangup, kills its child and exits */
    r->fd = -1;
    return mm_errf(err, errlen, MM_ERR, "document renderer %s", what);
}

int mm_doc_run(mm_doc_renderer_t *r, const mm_doc_run_t *run, const void *pdf, size_t len, mm_buf_t *out,
               mm_doc_result_t *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    if (r->fd < 0) return mm_errf(err, errlen, MM_ERR, "document renderer unavailable");
    wire_job_t job = {JOB_MAGIC, run->tool, run->first, run->last, run->scale_to > 0 ? run->scale_to : 1,
                      run->seconds, run->memory, run->max_out, len};
    if (!job_valid(&job)) return mm_errf(err, errlen, MM_E_INVALID, "document renderer: invalid job");
    /* the broker enforces run->seconds; this is the grace for it to
     * answer at all */
    int64_t deadline = now_us() + (int64_t)(run->seconds * 1e6) + 3000000;
    if (send_all(r->fd, &job, sizeof job, deadline) < 0 || send_all(r->fd, pdf, len, deadline) < 0)
        return broker_lost(r, err, errlen, "did not take the document");
    for (;;) {
        uint32_t h[2];
        if (recv_all(r->fd, h, sizeof h, deadline) < 0) return broker_lost(r, err, errlen, "did not answer");
        if (h[0] == F_OUT) {
            if (mm_buf_reserve(out, h[1]) != 0) return broker_lost(r, err, errlen, "output: out of memory");
            if (recv_all(r->fd, out->data + out->len, h[1], deadline) < 0)
                return broker_lost(r, err, errlen, "did not answer");
            out->len += h[1];
        } else if (h[0] == F_ERR && h[1] < 4096) {
            char tmp[4096];
            if (recv_all(r->fd, tmp, h[1], deadline) < 0) return broker_lost(r, err, errlen, "did not answer");
            size_t n = MM_MIN((size_t)h[1], sizeof res->stderr_text - 1);
            memcpy(res->stderr_text, tmp, n);
            res->stderr_text[n] = '\0';
        } else if (h[0] == F_END && h[1] == sizeof(wire_end_t)) {
            wire_end_t e;
            if (recv_all(r->fd, &e, sizeof e, deadline) < 0) return broker_lost(r, err, errlen, "did not answer");
            res->end = e.end;
            res->code = e.code;
            return MM_OK;
        } else {
            return broker_lost(r, err, errlen, "broke the protocol");
        }
    }
}
