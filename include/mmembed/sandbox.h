/* Worker sandbox: no-new-privs and a seccomp-BPF allow-list of the system
 * calls a worker makes once it serves (FastCGI I/O, threads, memory,
 * clocks, logging). A call outside the list is logged by a SIGSYS handler
 * and ends the process (exit status MM_SANDBOX_EXIT); the master replaces
 * it like any worker that died. Linux x86-64 only. */
#ifndef MMEMBED_SANDBOX_H
#define MMEMBED_SANDBOX_H

#include <stddef.h>

/* Exit status of a process the sandbox ended: 128 + SIGSYS, as a shell
 * reports a death by SIGSYS. */
#define MM_SANDBOX_EXIT 159

/* Enter the sandbox: PR_SET_NO_NEW_PRIVS, then the filter on every thread
 * of the process (SECCOMP_FILTER_FLAG_TSYNC: helper threads started
 * before, e.g. the inference pool, are covered too). Call after dropping
 * privileges and after the per-process setup that needs more (models
 * mapped, scratch allocated), before serving. Irreversible.
 * Returns MM_OK; MM_E_UNSUPPORTED when this build has no sandbox (not
 * x86-64, or built with sanitizers, whose runtime makes calls outside the
 * list; err says which) and nothing was changed; MM_ERR when the kernel
 * refused (err says why). */
int mm_sandbox_enter(char *err, size_t errlen);

/* Called (from the SIGSYS handler: async-signal-safe work only) before a
 * process the sandbox ends exits; the worker marks its running request. */
void mm_sandbox_on_deny(void (*fn)(int sig));

#ifdef MM_TEST_HOOKS
/* Test builds: make a system call the sandbox denies ("ptrace", "socket",
 * "execve", "fork"; NULL: ptrace). Without a sandbox it fails harmlessly
 * (ptrace(PTRACE_TRACEME) on an untraced process is undone at once; the
 * others are made to fail) and returns -1. */
int mm_sandbox_test_denied(const char *which);
#endif

#endif
