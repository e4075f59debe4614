/* seccomp-BPF program builder (see include/mmembed/seccomp.h). */
#include "mmembed/seccomp.h"

#if defined(__x86_64__)

#include <errno.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>
#include <unistd.h>

void mm_seccomp_emit(mm_seccomp_prog_t *p, struct sock_filter s)
{
    if (p->n < MM_SECCOMP_MAX_INSNS) p->f[p->n] = s;
    p->n++;
}

void mm_seccomp_begin(mm_seccomp_prog_t *p)
{
    p->n = 0;
    /* the architecture first: numbers mean other calls elsewhere */
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
    mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1));
    mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
}

void mm_seccomp_ret_on(mm_seccomp_prog_t *p, const int *nrs, size_t n, uint32_t ret)
{
    for (size_t i = 0; i < n; i++) {
        mm_seccomp_emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nrs[i], 0, 1));
        mm_seccomp_emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ret));
    }
}

long mm_seccomp_load(const mm_seccomp_prog_t *p, unsigned flags)
{
    if (p->n > MM_SECCOMP_MAX_INSNS) {
        errno = E2BIG;
        return -1;
    }
    struct sock_fprog fp = {.len = (unsigned short)p->n, .filter = (struct sock_filter *)p->f};
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fp);
}

#endif
