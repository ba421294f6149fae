#include <criterion/criterion.h>

int ferry_mint_placeholder_(void);
Test(mint, placeholder) { cr_assert_eq(ferry_mint_placeholder_(), 0); }
