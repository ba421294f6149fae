/* lib/oidc.c */
#include "config.h"
