/* Small builder for seccomp-BPF programs, written with the kernel's own
 * <linux/filter.h> macros (no libseccomp). Shared by the worker sandbox
 * (src/serve/sandbox.c) and the document renderer's children
 * (src/media/docrender.c), which keep their own lists and argument checks.
 * Linux x86-64 only: elsewhere this header declares nothing. */
#ifndef MMEMBED_SECCOMP_H
#define MMEMBED_SECCOMP_H

#if defined(__x86_64__)

#include <linux/filter.h>
#include <stddef.h>
#include <stdint.h>

enum { MM_SECCOMP_MAX_INSNS = 256 };

typedef struct {
    struct sock_filter f[MM_SECCOMP_MAX_INSNS];
    int n;   /* instructions emitted; past MM_SECCOMP_MAX_INSNS only counted */
} mm_seccomp_prog_t;

/* Append one instruction (counted, not stored, once the program is full:
 * mm_seccomp_load then refuses it, and p->n says how many it wanted). */
void mm_seccomp_emit(mm_seccomp_prog_t *p, struct sock_filter s);

/* Start a program: another architecture or an x32 ABI number (bit 30
 * reaches the same kernel code) kills the process; leaves the call number
 * in the accumulator for what follows. */
void mm_seccomp_begin(mm_seccomp_prog_t *p);

/* For each call number in nrs[0..n): if it is the call, return `ret` (a
 * SECCOMP_RET_* value); other calls fall through with the number still in
 * the accumulator. */
void mm_seccomp_ret_on(mm_seccomp_prog_t *p, const int *nrs, size_t n, uint32_t ret);

/* Install the program on this process (SECCOMP_SET_MODE_FILTER with
 * `flags`; no-new-privs must already be set). Async-signal-safe. Returns
 * the system call's result: 0 ok; -1 with errno (E2BIG when the program
 * overflowed); with SECCOMP_FILTER_FLAG_TSYNC, a thread id > 0 when a
 * thread could not be synchronized. */
long mm_seccomp_load(const mm_seccomp_prog_t *p, unsigned flags);

#endif
#endif
