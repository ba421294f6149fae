/* audit/k8s.c - Kubernetes loaders and rules of `ferry audit` (docs/internals/audit.md). */
#include "config.h"

#include "audit-internal.h"

const audit_cloud audit_cloud_k8s = {
    .name = "k8s",
};
