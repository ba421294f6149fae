/* ferry/totp.h - TOTP step-up (liboath): enrolment, one-time verification, lock-out. */
#ifndef FERRY_TOTP_H
#define FERRY_TOTP_H

#endif
