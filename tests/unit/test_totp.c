#include <criterion/criterion.h>

int ferry_totp_placeholder_(void);
Test(totp, placeholder) { cr_assert_eq(ferry_totp_placeholder_(), 0); }
