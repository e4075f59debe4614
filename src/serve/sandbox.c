/* Worker sandbox: PR_SET_NO_NEW_PRIVS and a seccomp-BPF allow-list, written
 * with the kernel's own <linux/filter.h> macros (no libseccomp).
 *
 * The list is what a serving worker was seen to call (strace -f -ff of
 * the workers over the whole integration suite, 254 sandboxed processes:
 * FastCGI accept/read/write, request and inference threads, oneDNN's JIT,
 * ffmpeg's decoder threads, the image libraries, the shared cache,
 * logging), plus a few calls of paths the suite rarely takes. Everything a worker needs before it serves (forking, dropping
 * privileges, mapping the shared weights and cache, creating its threads)
 * happens before mm_sandbox_enter, so none of that is on the list.
 *
 * Arguments are checked where a call is dangerous only in some forms:
 *   clone    only with CLONE_THREAD (threads; no fork, vfork or spawn)
 *   clone3   answered ENOSYS (its flags live in memory that BPF cannot
 *            read; glibc then falls back to clone, which is checked)
 *   kill, tgkill   only this process (raise/abort/pthread_kill)
 *   openat   only the log file's flags (O_WRONLY|O_CREAT|O_APPEND|O_CLOEXEC,
 *            the SIGUSR1 reopen): no file can be opened for reading
 *   prctl    only PR_SET_NAME / PR_GET_NAME (thread names)
 *   newfstatat  only AT_EMPTY_PATH (fstat of an open descriptor)
 * A denied call raises SIGSYS (SECCOMP_RET_TRAP); the handler writes one
 * log line with the call's number and ends the process. Another
 * architecture or the x32 ABI is killed outright (SECCOMP_RET_KILL_PROCESS). */
#include "mmembed/sandbox.h"
#include "mmembed/common.h"
#include "mmembed/log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MM_SANDBOX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define MM_SANDBOX_SANITIZED 1
#endif
#endif

#if defined(__x86_64__) && !defined(MM_SANDBOX_SANITIZED)

#include "mmembed/seccomp.h"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* ---------------------------------------------------------------- the list */

/* Allowed with any arguments: what the workers were seen to call over the
 * whole integration suite (the first three groups), plus the calls of
 * paths it rarely takes (realloc of a large body, a signal interrupting a
 * sleep, abort, fstat before stdio prints). Hottest first. */
static const int allowed[] = {
    /* seen: FastCGI on the socket the master opened, the accept loop */
    SYS_getpid, SYS_poll, SYS_read, SYS_getppid, SYS_write, SYS_close, SYS_accept, SYS_shutdown,
    SYS_setsockopt, /* TCP_NODELAY on TCP listeners */
    /* seen: threads (inference pool, request thread, ffmpeg decoders) */
    SYS_futex, SYS_sched_yield, SYS_clock_nanosleep, SYS_rt_sigprocmask, SYS_set_robust_list, SYS_rseq,
    SYS_gettid, SYS_exit, SYS_exit_group, SYS_rt_sigreturn,
    /* seen: memory (malloc, oneDNN's JIT: mprotect to executable), glibc
     * thread arenas (mbind MPOL_PREFERRED) */
    SYS_mmap, SYS_mprotect, SYS_munmap, SYS_brk, SYS_madvise, SYS_mbind,
    /* rare paths */
    SYS_mremap, SYS_accept4, SYS_readv, SYS_writev, SYS_select, SYS_ppoll, SYS_fcntl, SYS_lseek, SYS_fstat,
    SYS_restart_syscall, SYS_nanosleep, SYS_clock_gettime, SYS_clock_getres, SYS_gettimeofday,
    SYS_getrandom, SYS_sched_getaffinity, SYS_rt_sigaction, SYS_dup3,
    /* process-local queries and settings that CPU-specific library paths
     * make (oneDNN asks for AMX tile state with arch_prctl on its first
     * large product: USE-Lite's 128-token batches hit it here; every
     * product on AMX hosts), none of which reaches outside the process */
    SYS_arch_prctl, SYS_sysinfo, SYS_uname, SYS_getrusage, SYS_times, SYS_getcpu, SYS_sigaltstack,
    SYS_set_tid_address, SYS_membarrier, SYS_sched_getparam, SYS_sched_getscheduler,
};

#define A_ARG_LO(i) offsetof(struct seccomp_data, args[i]) /* little endian: the low word */

#define ALLOW BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
#define DENY BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP)

/* if nr == `nr`: allow when (low word of arg `i`) == v, else deny; other
 * calls fall through with the number still in the accumulator */
static void arg_eq(mm_seccomp_prog_t *p, int nr, int i, unsigned v)
{
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 4));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, A_ARG_LO(i)));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, v, 0, 1));
    mm_seccomp_emit(p, (struct sock_filter)ALLOW);
    mm_seccomp_emit(p, (struct sock_filter)DENY);
}

static int build(mm_seccomp_prog_t *p)
{
    mm_seccomp_begin(p);
    mm_seccomp_ret_on(p, allowed, MM_ARRAY_LEN(allowed), SECCOMP_RET_ALLOW);
    /* clone3 → ENOSYS: glibc retries with clone, whose flags we can read */
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)));
    /* clone: threads only */
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, A_ARG_LO(0)));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1));
    mm_seccomp_emit(p, (struct sock_filter)ALLOW);
    mm_seccomp_emit(p, (struct sock_filter)DENY);
    /* signals to this process only */
    unsigned self = (unsigned)getpid();
    arg_eq(p, SYS_kill, 0, self);
    arg_eq(p, SYS_tgkill, 0, self);
    /* newfstatat: glibc's fstat(fd) is newfstatat(fd, "", AT_EMPTY_PATH);
     * a path (is there such a file?) is denied */
    arg_eq(p, SYS_newfstatat, 3, AT_EMPTY_PATH);
    /* openat: only as the log reopens its file */
    arg_eq(p, SYS_openat, 2, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC);
    /* prctl: thread names */
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_prctl, 0, 5));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, A_ARG_LO(0)));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_SET_NAME, 1, 0));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_GET_NAME, 0, 1));
    mm_seccomp_emit(p, (struct sock_filter)ALLOW);
    mm_seccomp_emit(p, (struct sock_filter)DENY);
    mm_seccomp_emit(p, (struct sock_filter)DENY);
    return p->n <= MM_SECCOMP_MAX_INSNS ? 0 : -1;
}

/* ---------------------------------------------------------------- SIGSYS */

/* Names of the calls an attacker would reach for first (the log line has
 * the number in any case). */
static const char *call_name(int nr)
{
    switch (nr) {
    case SYS_execve: return "execve";
    case SYS_execveat: return "execveat";
    case SYS_ptrace: return "ptrace";
    case SYS_socket: return "socket";
    case SYS_connect: return "connect";
    case SYS_bind: return "bind";
    case SYS_listen: return "listen";
    case SYS_fork: return "fork";
    case SYS_vfork: return "vfork";
    case SYS_clone: return "clone (not a thread)";
    case SYS_kill: return "kill (another process)";
    case SYS_tgkill: return "tgkill (another process)";
    case SYS_openat: return "openat";
    case SYS_open: return "open";
    case SYS_unlink: return "unlink";
    case SYS_unlinkat: return "unlinkat";
    case SYS_mount: return "mount";
    case SYS_setuid: return "setuid";
    case SYS_prctl: return "prctl";
    case SYS_ioctl: return "ioctl";
    case SYS_process_vm_readv: return "process_vm_readv";
    case SYS_process_vm_writev: return "process_vm_writev";
    default: return NULL;
    }
}

static char *put_str(char *d, const char *s)
{
    while (*s) *d++ = *s++;
    return d;
}

static char *put_uint(char *d, unsigned long v)
{
    char t[24];
    int n = 0;
    do t[n++] = (char)('0' + v % 10); while ((v /= 10) && n < 24);
    while (n) *d++ = t[--n];
    return d;
}

static void (*deny_hook)(int sig);

void mm_sandbox_on_deny(void (*fn)(int sig))
{
    deny_hook = fn;
}

/* Async-signal-safe: the denied call may have come from inside malloc or
 * the logger itself, so no stdio, no locks. */
static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
    if (deny_hook) deny_hook(sig);
    (void)sig;
    (void)uc;
    char msg[160], *d = msg;
    const char *name = call_name(si->si_syscall);
    d = put_str(d, "sandbox: system call ");
    d = put_uint(d, (unsigned)si->si_syscall);
    if (name) {
        d = put_str(d, " (");
        d = put_str(d, name);
        d = put_str(d, ")");
    }
    d = put_str(d, " is not allowed; the worker exits");
    *d = '\0';
    mm_log_signal_safe(MM_LOG_ERROR, msg);
    _exit(MM_SANDBOX_EXIT);
}

int mm_sandbox_enter(char *err, size_t errlen)
{
    mm_seccomp_prog_t p;
    if (build(&p) < 0)
        return mm_errf(err, errlen, MM_ERR, "sandbox: filter has %d instructions (max %d)", p.n,
                       MM_SECCOMP_MAX_INSNS);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) < 0)
        return mm_errf(err, errlen, MM_ERR, "sandbox: sigaction(SIGSYS): %s", strerror(errno));
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return mm_errf(err, errlen, MM_ERR, "sandbox: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
    long rc = mm_seccomp_load(&p, SECCOMP_FILTER_FLAG_TSYNC);
    if (rc != 0)
        return mm_errf(err, errlen, MM_ERR, "sandbox: seccomp filter: %s",
                       rc > 0 ? "another thread has a different filter" : strerror(errno));
    return MM_OK;
}

#else /* no sandbox in this build */

void mm_sandbox_on_deny(void (*fn)(int sig))
{
    (void)fn;
}

int mm_sandbox_enter(char *err, size_t errlen)
{
#ifdef MM_SANDBOX_SANITIZED
    return mm_errf(err, errlen, MM_E_UNSUPPORTED, "sandbox off: built with sanitizers");
#else
    return mm_errf(err, errlen, MM_E_UNSUPPORTED, "sandbox off: only x86-64 has an allow-list");
#endif
}

#endif

#ifdef MM_TEST_HOOKS
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

int mm_sandbox_test_denied(const char *which)
{
    if (!which || strcmp(which, "ptrace") == 0) {
        /* not attached to the master, so it fails with ESRCH unsandboxed */
        ptrace(PTRACE_PEEKDATA, getppid(), NULL, NULL);
        return -1;
    }
    if (strcmp(which, "socket") == 0) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) close(fd);
        return -1;
    }
    if (strcmp(which, "execve") == 0) {
        char *argv[] = {NULL};
        return (int)syscall(SYS_execve, "/nonexistent/mmembed-sandbox-test", argv, argv);
    }
    if (strcmp(which, "fork") == 0) {
        /* fork() goes through clone without CLONE_THREAD; a child that
         * did start leaves at once */
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
        return -1;
    }
    return -1;
}
#endif
