/* Logging: one line per event, to a file or stderr, shared by master and
 * workers (opened by the master before fork, reopened on SIGUSR1). */
#ifndef MMEMBED_LOG_H
#define MMEMBED_LOG_H

#include "mmembed/common.h"

enum { MM_LOG_ERROR = 0, MM_LOG_WARN, MM_LOG_INFO, MM_LOG_DEBUG };

/* Parse "error|warn|info|debug"; -1 if unknown. */
int mm_log_level_parse(const char *s);
/* Open `path` ("-" or NULL = stderr) for appending and set the level. */
int mm_log_open(const char *path, int level);
/* Reopen the current file (log rotation). */
int mm_log_reopen(void);
/* Set the "who" prefix of this process's lines, e.g. "master" or "worker 3". */
void mm_log_set_role(const char *role);
void mm_log(int level, const char *fmt, ...) MM_PRINTF(2, 3);
int mm_log_enabled(int level);
/* One line like mm_log's, message as is, safe in a signal handler (no
 * stdio, no locks; for a process about to die, e.g. the sandbox's SIGSYS). */
void mm_log_signal_safe(int level, const char *msg);

#define mm_log_error(...) mm_log(MM_LOG_ERROR, __VA_ARGS__)
#define mm_log_warn(...) mm_log(MM_LOG_WARN, __VA_ARGS__)
#define mm_log_info(...) mm_log(MM_LOG_INFO, __VA_ARGS__)
#define mm_log_debug(...) mm_log(MM_LOG_DEBUG, __VA_ARGS__)

#endif
