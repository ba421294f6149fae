#include <criterion/criterion.h>

int ferry_auditlog_placeholder_(void);
Test(auditlog, placeholder) { cr_assert_eq(ferry_auditlog_placeholder_(), 0); }
