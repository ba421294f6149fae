/* audit/gcp.c - GCP loaders and rules of `ferry audit` (docs/internals/audit.md). */
#include "config.h"

#include "audit-internal.h"

const audit_cloud audit_cloud_gcp = {
    .name = "gcp",
};
