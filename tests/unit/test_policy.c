#include <criterion/criterion.h>

int ferry_policy_placeholder_(void);
Test(policy, placeholder) { cr_assert_eq(ferry_policy_placeholder_(), 0); }
