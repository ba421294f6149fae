/* ferry/auditlog.h - hash-chained audit log with signed checkpoints. */
#ifndef FERRY_AUDITLOG_H
#define FERRY_AUDITLOG_H

#endif
