/* totp.c - TOTP step-up (liboath): enrolment, one-time verification, lock-out. */
#include "ferry/totp.h"

int ferry_totp_placeholder_(void);
int ferry_totp_placeholder_(void) { return 0; }
