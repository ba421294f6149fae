/* lib/jose.c */
#include "config.h"
