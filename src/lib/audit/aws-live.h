/* audit/aws-live.h - what aws_live.c (`ferry audit aws --live`) shares with aws.c and its unit
 * test. See docs/internals/audit.md, "AWS live mode".
 */
#ifndef FERRY_AUDIT_AWS_LIVE_H
#define FERRY_AUDIT_AWS_LIVE_H

#include <stddef.h>

#include <jansson.h>

#include "ferry/audit.h"

/* Limits of one IAM Query API answer converted by audit_aws_xml_to_json. */
#define AUDIT_XML_MAX_DEPTH 32         /* element nesting */
#define AUDIT_XML_MAX_ELEMENTS 4000000 /* elements in one answer */
#define AUDIT_XML_MAX_TEXT 1048576u    /* character data of one element */

/* Convert the XML answer of the IAM Query API action ("GetAccountAuthorizationDetails") into
 * the JSON the AWS CLI prints for it, which the export loaders read: the document must be one
 * <ACTIONResponse> holding one <ACTIONResult>; an element whose children are <member>
 * elements becomes an array, one with other children an object, a leaf a string (booleans and
 * counts the API types so are true/false and integers; empty lists [] and empty RoleLastUsed
 * {}). Parsed with expat as it streams; a DOCTYPE, any entity declaration or reference other
 * than the five predefined ones, a processing instruction, mixed content, a repeated member
 * name, or a limit above passed is refused. *ret is new (the Result object). Returns 0,
 * -FERRY_EMALFORMED or -FERRY_ETOOBIG with a reason naming the element (never content), or
 * -ENOMEM. */
int audit_aws_xml_to_json(const char *xml, size_t len, const char *action, json_t **ret,
                          char *errbuf, size_t errlen);

/* The reason the info note of AWS-OP-011 gives for accounts without usage data (live mode:
 * the endpoint does not implement service-last-accessed). reason is copied; NULL restores the
 * default. Returns 0 or -ENOMEM. */
int audit_aws_usage_unavailable(ferry_audit *a, const char *reason);

#endif
