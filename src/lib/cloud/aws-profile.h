/* lib/cloud/aws-profile.h - the AWS shared configuration and credentials files (inside
 * libferry, not installed): the profile part of the standard AWS credential chain, for hosts
 * where ferry runs with neither a role of its own nor environment credentials.
 * docs/internals/cloud.md ("The profile chain").
 */
#ifndef FERRY_CLOUD_AWS_PROFILE_H
#define FERRY_CLOUD_AWS_PROFILE_H

#include <stddef.h>

#include "ferry/cloud.h"

#define FERRY_AWS_PROFILE_FILE_MAX (1024 * 1024) /* bytes of one of the two files */
#define FERRY_AWS_PROFILE_LINE_MAX 4096
#define FERRY_AWS_PROFILE_NAME_MAX 128

/* What one profile says, from both files. */
typedef struct ferry_aws_profile {
    char name[FERRY_AWS_PROFILE_NAME_MAX + 1];
    ferry_aws_credentials creds; /* static keys; access_key_id[0] == '\0' when none */
    char region[64];             /* "" when not set */
    char *role_arn;              /* with web_identity_token_file: AssumeRoleWithWebIdentity */
    char *web_identity_token_file;
    char *role_session_name;
} ferry_aws_profile;

/* Load profile name (NULL: $AWS_PROFILE, else "default") from the credentials file
 * ($AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials; sections "[name]") and the config
 * file ($AWS_CONFIG_FILE, else ~/.aws/config; sections "[default]" and "[profile name]"). A
 * missing file is as good as an empty one. Keys ferry uses: aws_access_key_id,
 * aws_secret_access_key, aws_session_token (the credentials file's win over the config
 * file's), region, role_arn, web_identity_token_file, role_session_name; other keys and
 * indented sub-settings are ignored. A profile that asks for what ferry does not do
 * (credential_process: ferry runs no program named by a file; source_profile,
 * credential_source, sso_*: no role chaining or SSO) and gives no usable credentials is refused
 * with -FERRY_EUNSUPPORTED naming the key. Each file: a regular file of at most
 * FERRY_AWS_PROFILE_FILE_MAX bytes, lines of at most FERRY_AWS_PROFILE_LINE_MAX, printable
 * ASCII; a key twice in the selected profile of one file is refused (-FERRY_EDUPLICATE).
 * Errors name the file and line, never a value. Returns 0 and fills *ret
 * (ferry_aws_profile_clear it), -ENOENT when neither file has the profile or it holds no
 * credentials, or another negative code, with a reason. */
int ferry_aws_profile_load(const char *name, ferry_aws_profile *ret, char *errbuf,
                           size_t errlen);

/* Wipe and free what p holds, and zero it. Accepts NULL. */
void ferry_aws_profile_clear(ferry_aws_profile *p);

#endif
