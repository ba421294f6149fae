/* ferry/policy.h - least-privilege policy: load, index, decide, explain. */
#ifndef FERRY_POLICY_H
#define FERRY_POLICY_H

#endif
