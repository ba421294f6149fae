/* audit/shadow.c - shadow identities: the cloud service identities no ferry policy declares
 * (docs/internals/audit.md). */
#include "config.h"

#include "audit-internal.h"

int audit_identity_note(ferry_audit *a, const audit_identity *id)
{
    (void)id;
    if (!a->shadow) /* no --policies: nothing to compare with */
        return 0;
    return 0;
}
